//! Prints the ORL EER from float and int8 templates, the gallery's memory per template,
//! and the exact 1:N search speed on a synthetic gallery.
//!
//! `cargo run -p quorumid-biometrics --profile ci --example face_eval [GALLERY_SIZE]`

use std::path::Path;
use std::time::Instant;

use quorumid_biometrics::calibration::{Centring, calibrate};
use quorumid_biometrics::eval::ErrorRates;
use quorumid_biometrics::face::{Embedding, FaceTemplate, ModelId};
use quorumid_biometrics::gallery::Gallery;

#[derive(serde::Deserialize)]
struct Line {
    subject: u32,
    embedding: Vec<f32>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let size: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/faces/orl-sface.jsonl");
    let model = ModelId::new("sface-2021dec", 128)?;
    let mut samples = Vec::new();
    for line in std::fs::read_to_string(path)?.lines() {
        let l: Line = serde_json::from_str(line)?;
        samples.push((l.subject, l.embedding));
    }
    let emb: Vec<Embedding> = samples
        .iter()
        .map(|(_, v)| Embedding::new(model.clone(), v.clone()))
        .collect::<Result<_, _>>()?;
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for i in 0..emb.len() {
        for j in i + 1..emb.len() {
            let s = f64::from(emb[i].cosine(&emb[j])?);
            if samples[i].0 == samples[j].0 {
                genuine.push(s)
            } else {
                impostor.push(s)
            }
        }
    }
    let float = ErrorRates::compute(&genuine, &impostor)?;
    let int8 = calibrate(&model, &samples, Centring::None, &[1e-3, 1e-4])?;
    let centred = calibrate(&model, &samples, Centring::Mean, &[1e-3, 1e-4])?;
    println!(
        "| ORL SFace | genuine | impostor | EER % | FNMR@1e-2 % | FNMR@1e-3 % | FNMR@1e-4 % |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, r) in [
        ("float", &float),
        ("int8", &int8.rates),
        ("int8, mean-centred", &centred.rates),
    ] {
        println!(
            "| {name} | {} | {} | {:.3} | {:.2} | {:.2} | {:.2} |",
            r.genuine_count,
            r.impostor_count,
            100.0 * r.eer,
            100.0 * r.at_fmr[0].fnmr,
            100.0 * r.at_fmr[1].fnmr,
            100.0 * r.at_fmr[2].fnmr
        );
    }
    for p in &int8.thresholds {
        println!(
            "int8 threshold for FMR {:e}: {:.4} (FNMR {:.2}%)",
            p.target_fmr,
            p.threshold,
            100.0 * p.fnmr
        );
    }

    // Synthetic gallery: random unit vectors (splitmix64 -> roughly Gaussian components).
    let mut state = 42u64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let mut gallery = Gallery::new(model.clone());
    for key in 0..size as u64 {
        let v: Vec<f32> = (0..128).map(|_| next() + next() + next()).collect();
        gallery.insert(key, &Embedding::new(model.clone(), v)?.quantise())?;
    }
    let probes: Vec<FaceTemplate> = emb.iter().take(50).map(Embedding::quantise).collect();
    let start = Instant::now();
    let mut hits = 0;
    for p in &probes {
        hits += usize::from(gallery.search(p, 0.5)?.is_some());
    }
    let per_search = start.elapsed().as_secs_f64() / probes.len() as f64;
    println!(
        "gallery of {size}: {:.1} bytes per template; exact search {:.2} ms on one thread \
         ({:.1} M templates/s; {hits} hits)",
        gallery.memory_bytes() as f64 / size as f64,
        per_search * 1e3,
        size as f64 / per_search / 1e6
    );
    Ok(())
}
