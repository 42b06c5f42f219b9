//! Prints the FVC2002 EER table (both angle conventions) and the comparison speed.
//!
//! `cargo run -p quorumid-biometrics --profile ci --example fvc_eval [DATA_DIR]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use quorumid_biometrics::fingerprint::AngleConvention;
use quorumid_biometrics::fvc::Database;
use quorumid_biometrics::mcc::{Matcher, MccParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let dbs = ["DB1_B", "DB2_B", "DB3_B", "DB4_B"];
    let mut loaded = Vec::new();
    for db in dbs {
        loaded.push((db, Database::load(&data.join("fvc2002").join(db))?));
    }
    println!(
        "FVC protocol: genuine pairs = all pairs of impressions of one finger; impostor pairs =\n\
         all pairs of impressions of different fingers, every impression used. FNMR@1e-4 is\n\
         not resolvable with 2,880 impostors (it is FNMR at FMR 0).\n"
    );
    println!(
        "| database | convention | genuine | impostor | EER % | FNMR@1e-2 % | FNMR@1e-3 % | FNMR@1e-4 % | threshold@1e-3 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for convention in [
        AngleConvention::CounterClockwise,
        AngleConvention::Clockwise,
    ] {
        let matcher = Matcher::new(MccParams {
            angle_convention: convention,
            ..MccParams::default()
        });
        for (name, db) in &loaded {
            let e = db.evaluate(&matcher)?;
            let r = &e.rates;
            println!(
                "| {name} | {convention:?} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.4} |",
                r.genuine_count,
                r.impostor_count,
                100.0 * r.eer,
                100.0 * r.at_fmr[0].fnmr,
                100.0 * r.at_fmr[1].fnmr,
                100.0 * r.at_fmr[2].fnmr,
                r.at_fmr[1].threshold,
            );
        }
    }
    // Speed: one thread, every pair of every database, precomputed templates.
    let matcher = Matcher::default();
    let templates: Vec<_> = loaded
        .iter()
        .map(|(_, db)| db.templates(&matcher))
        .collect();
    let start = Instant::now();
    let build_rounds = 5;
    for _ in 0..build_rounds {
        for (_, db) in &loaded {
            std::hint::black_box(db.templates(&matcher));
        }
    }
    let per_template = start.elapsed().as_secs_f64() / (build_rounds * 320) as f64;
    let mut comparisons = 0u64;
    let mut checksum = 0f64;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < 3.0 {
        for t in &templates {
            for (i, a) in t.iter().enumerate() {
                for (j, b) in t.iter().enumerate() {
                    if i != j {
                        checksum += f64::from(matcher.compare(a, b));
                        comparisons += 1;
                    }
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!();
    println!(
        "comparisons: {comparisons} in {secs:.2} s on one thread = {:.0} per second (checksum {checksum:.1})",
        comparisons as f64 / secs
    );
    println!(
        "template extraction: {:.1} us per record",
        per_template * 1e6
    );
    Ok(())
}
