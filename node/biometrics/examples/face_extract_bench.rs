//! Times image -> template extraction per face over the 400 ORL images, each stage apart
//! (YuNet detection, alignment, SFace embedding), on one thread. The images are decoded and
//! prepared by the data's recipe (resize, pad) first, untimed, as the OpenCV side does.
//! `bench/face_vs_opencv.sh` runs it beside OpenCV; alone:
//!
//! `cargo run -p quorumid-biometrics --profile ci --example face_extract_bench [MODELS_DIR] [ROUNDS]`
//!
//! Prints a table, then one JSON line (`{"side": "tract", ...}`) for the comparison script.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use quorumid_biometrics::extract::decode::decode;
use quorumid_biometrics::extract::prepare::orl_recipe;
use quorumid_biometrics::extract::{FaceExtractor, Limits, default_models_dir};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and 99th percentile (nearest rank) in milliseconds.
fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let median = if v.len().is_multiple_of(2) {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    } else {
        v[v.len() / 2]
    };
    let p99 = v[((0.99 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (median, p99)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .or_else(default_models_dir)
        .ok_or("no models directory")?;
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(1);

    let started = Instant::now();
    let extractor = FaceExtractor::load(&dir)
        .map_err(|e| format!("{e} (run node/biometrics/models/fetch.sh)"))?;
    let load = started.elapsed();
    let mut images = Vec::new();
    for s in 1..=40 {
        for i in 1..=10 {
            let bytes = std::fs::read(dir.join(format!("orl/s{s}/{i}.pgm")))?;
            let image = decode(&bytes, &Limits::default())?;
            images.push(orl_recipe(&image).ok_or("recipe")?);
        }
    }
    // The first detection at a new size optimises a plan for it: timed apart.
    let started = Instant::now();
    extractor.detect(&images[0])?;
    let first = started.elapsed();

    let (mut detect, mut align, mut embed, mut total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        for image in &images {
            let t0 = Instant::now();
            let faces = extractor.detect(image)?;
            let t1 = Instant::now();
            let crop = extractor.align(image, faces.first().ok_or("no face")?)?;
            let t2 = Instant::now();
            let embedding = extractor.embed(&crop)?;
            let t3 = Instant::now();
            std::hint::black_box(embedding);
            detect.push(ms(t1 - t0));
            align.push(ms(t2 - t1));
            embed.push(ms(t3 - t2));
            total.push(ms(t3 - t0));
        }
    }
    let n = total.len();
    let [d, a, e, t] = [detect, align, embed, total].map(stats);
    println!(
        "tract: {n} faces ({}x{} px), models loaded in {:.0} ms, first detection (plan) {:.0} ms",
        images[0].width(),
        images[0].height(),
        ms(load),
        ms(first)
    );
    println!("stage      median ms   p99 ms");
    for (name, (m, p)) in [("detect", d), ("align", a), ("embed", e), ("total", t)] {
        println!("{name:<10} {m:>9.3} {p:>8.3}");
    }
    println!(
        "{{\"side\": \"tract\", \"faces\": {n}, \"detect\": [{:.4}, {:.4}], \"align\": [{:.4}, {:.4}], \"embed\": [{:.4}, {:.4}], \"total\": [{:.4}, {:.4}]}}",
        d.0, d.1, a.0, a.1, e.0, e.1, t.0, t.1
    );
    Ok(())
}
