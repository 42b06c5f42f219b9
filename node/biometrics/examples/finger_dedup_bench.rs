//! Time of an exact fingerprint de-dup search against the size of the finger gallery.
//!
//! The gallery is filled with the impressions of FVC2002 DB1..DB3 B (240 real finger views,
//! repeated to the wanted size: the cost of a comparison depends on the minutiae, not on
//! who they belong to); the probes are DB4's 80 impressions, none of which is in the
//! gallery, so every search is a newcomer's: it compares with every row.
//!
//! ```sh
//! cargo run --profile ci -p quorumid-biometrics --no-default-features \
//!     --example finger_dedup_bench -- 1000 10000 50000
//! ```

use std::path::Path;
use std::time::Instant;

use quorumid_biometrics::finger_gallery::{DEDUP_THRESHOLD, FingerGallery, UNKNOWN_POSITION};
use quorumid_biometrics::fvc::Database;
use quorumid_biometrics::mcc::Matcher;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("gallery sizes, in finger views"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/fvc2002");
    let m = Matcher::default();
    let load = |db: &str| Database::load(&data.join(db)).expect("FVC2002 data");
    let rows: Vec<_> = ["DB1_B", "DB2_B", "DB3_B"]
        .iter()
        .flat_map(|db| load(db).templates(&m))
        .collect();
    let probes = load("DB4_B").templates(&m);
    println!(
        "| finger views | threads | searches | p50 ms | p99 ms | comparisons/s | false matches |"
    );
    println!("|---|---|---|---|---|---|---|");
    for size in sizes {
        let mut gallery = FingerGallery::new(m.clone());
        for n in 0..size {
            gallery.insert(n as u64, UNKNOWN_POSITION, rows[n % rows.len()].clone());
        }
        for threads in [1, 2] {
            gallery.set_threads(threads);
            // Bounded: at most 80 searches and about 20 s a size.
            let started = Instant::now();
            let mut times = Vec::new();
            let mut false_matches = 0;
            for probe in &probes {
                let t = Instant::now();
                let found =
                    gallery.search(&[(UNKNOWN_POSITION, probe.clone())], DEDUP_THRESHOLD, true);
                times.push(t.elapsed().as_secs_f64() * 1e3);
                // A false match (about 1e-4 a comparison) ends the search early: left out.
                if found.is_some() {
                    times.pop();
                    false_matches += 1;
                }
                if started.elapsed().as_secs() >= 20 {
                    break;
                }
            }
            times.sort_by(f64::total_cmp);
            let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
            let total: f64 = times.iter().sum();
            println!(
                "| {size} | {threads} | {} | {:.1} | {:.1} | {:.0} | {false_matches} |",
                times.len(),
                at(0.5),
                at(0.99),
                (size * times.len()) as f64 / (total / 1e3)
            );
        }
    }
}
