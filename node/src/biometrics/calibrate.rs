//! `quorumid-node calibrate`: face decision thresholds for the node's configuration, from a
//! labelled set of embeddings, one JSON object a line:
//! `{"subject": 1, "embedding": [0.01, ...]}` (or `"label"`: a string or number).
//!
//! It scores every pair with the node's own int8 templates, reports the genuine and impostor
//! distributions, EER and FNMR at FMR 1e-2/1e-3/1e-4, and writes the `[biometrics]` section:
//! the 1:1 threshold at `--fmr`, the de-dup floor at `--dedup-fmr`, and the impostor tail the
//! de-dup threshold rises along as the gallery grows (with the de-dup threshold and the FNMR
//! it gives at some gallery sizes).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use quorumid_biometrics::calibration::{Calibration, Centring, calibrate, calibrate_scored};
use quorumid_biometrics::eval::ScoreSets;
use quorumid_biometrics::face::ModelId;

use super::BiometricsConfig;

#[derive(Debug, clap::Args)]
pub struct CalibrateOptions {
    /// JSON lines of labelled embeddings.
    #[arg(long)]
    pub labelled: PathBuf,
    /// The model that made the embeddings (the `model_id` its templates carry).
    #[arg(long, default_value = "sface-2021dec")]
    pub model: String,
    /// False-match rate for 1:1 verification.
    #[arg(long, default_value_t = 1e-3)]
    pub fmr: f64,
    /// False-match rate for each comparison of the 1:N enrollment de-dup.
    #[arg(long, default_value_t = 1e-4)]
    pub dedup_fmr: f64,
    /// Write the `[biometrics]` section here (default: print it).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

type Samples = Vec<(String, Vec<f32>)>;

/// Reads `{"subject"|"label": ..., "embedding": [...]}` lines.
pub fn read_labelled(path: &Path) -> anyhow::Result<Samples> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut samples = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{}:{}", path.display(), n + 1);
        let value: serde_json::Value = serde_json::from_str(line).with_context(at)?;
        let label = match value.get("label").or_else(|| value.get("subject")) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => bail!("{}: needs a \"label\" or \"subject\"", at()),
        };
        let embedding = value
            .get("embedding")
            .and_then(|e| e.as_array())
            .with_context(|| format!("{}: needs an \"embedding\" array", at()))?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .with_context(|| format!("{}: the embedding holds a non-number", at()))?;
        samples.push((label, embedding));
    }
    if samples.len() < 2 {
        bail!(
            "{}: at least two labelled embeddings are needed",
            path.display()
        );
    }
    Ok(samples)
}

/// Calibrates on `samples`: the thresholds, the full calibration they came from, and the
/// pair scores behind it.
pub fn thresholds(
    model: &str,
    samples: &Samples,
    fmr: f64,
    dedup_fmr: f64,
) -> anyhow::Result<(BiometricsConfig, Calibration, ScoreSets)> {
    let model = ModelId::new(model, samples[0].1.len())?;
    // The node compares embeddings as they come (it does not centre them), so calibrate the same way.
    let (calibration, scores) =
        calibrate_scored(&model, samples, Centring::None, &[fmr, dedup_fmr])?;
    let defaults = BiometricsConfig::default();
    let thresholds = BiometricsConfig {
        face: calibration.thresholds[0].threshold as f32,
        dedup_face: calibration.thresholds[1].threshold as f32,
        face_impostor_tail: calibration
            .impostor_tail
            .unwrap_or(defaults.face_impostor_tail),
        ..defaults
    };
    Ok((thresholds, calibration, scores))
}

pub fn run(options: CalibrateOptions) -> anyhow::Result<()> {
    let samples = read_labelled(&options.labelled)?;
    let (thresholds, c, scores) =
        thresholds(&options.model, &samples, options.fmr, options.dedup_fmr)?;
    let r = &c.rates;
    println!(
        "model {} ({} dimensions), {} embeddings",
        c.model.name(),
        c.model.dimension(),
        samples.len()
    );
    println!(
        "genuine pairs {}: min {:.3} median {:.3} max {:.3}",
        c.genuine.count, c.genuine.min, c.genuine.median, c.genuine.max
    );
    println!(
        "impostor pairs {}: min {:.3} median {:.3} max {:.3}",
        c.impostor.count, c.impostor.min, c.impostor.median, c.impostor.max
    );
    println!("EER {:.3} %", 100.0 * r.eer);
    for p in &r.at_fmr {
        println!(
            "FNMR at FMR {:.0e}: {:.2} % (threshold {:.4})",
            p.target_fmr,
            100.0 * p.fnmr,
            p.threshold
        );
    }
    match &c.impostor_tail {
        Some(tail) => {
            println!(
                "impostor tail: from {:.4} ({} % of pairs above), scale {:.5}, shape {:.3}",
                tail.from,
                100.0 * tail.fraction,
                tail.scale,
                tail.shape
            );
            let sizes = [1_000, 100_000, 1_000_000];
            for at in tail.at_sizes(
                thresholds.dedup_face,
                thresholds.dedup_fpir / 2.0,
                &sizes,
                &scores,
            ) {
                println!(
                    "de-dup threshold at {} enrolled faces: {:.4} (FNMR {:.2} %)",
                    at.comparisons,
                    at.threshold,
                    100.0 * at.fnmr
                );
            }
        }
        None => println!(
            "too few impostor pairs to fit their tail: the default face_impostor_tail is kept"
        ),
    }
    // Report what centring would give, for models whose embeddings are not zero-centred.
    let model = ModelId::new(&options.model, samples[0].1.len())?;
    let centred = calibrate(&model, &samples, Centring::Mean, &[options.fmr])?;
    println!(
        "with mean-centring the EER would be {:.3} % (the node does not centre embeddings yet)",
        100.0 * centred.rates.eer
    );
    let section = toml::to_string(&Section {
        biometrics: thresholds,
    })?;
    match options.out {
        Some(path) => {
            std::fs::write(&path, &section)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
        None => print!("\n{section}"),
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct Section {
    biometrics: BiometricsConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orl_calibration_reproduces_the_default_face_thresholds() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/faces/orl-sface.jsonl");
        let samples = read_labelled(&path).unwrap();
        assert_eq!(samples.len(), 400);
        let (t, c, _) = thresholds("sface-2021dec", &samples, 1e-3, 1e-4).unwrap();
        assert_eq!(c.genuine.count, 1_800);
        assert_eq!(c.impostor.count, 78_000);
        let defaults = BiometricsConfig::default();
        assert!((t.face - defaults.face).abs() < 0.005, "{}", t.face);
        assert!(
            (t.dedup_face - defaults.dedup_face).abs() < 0.005,
            "{}",
            t.dedup_face
        );
        // The default face tail is ORL's, as this calibration fits it.
        let (tail, default) = (t.face_impostor_tail, defaults.face_impostor_tail);
        assert!((tail.from - default.from).abs() < 1e-3, "{tail:?}");
        assert!((tail.fraction - default.fraction).abs() < 1e-6, "{tail:?}");
        assert!((tail.scale / default.scale - 1.0).abs() < 1e-3, "{tail:?}");
        assert_eq!(tail.shape, default.shape, "{tail:?}");
        assert!(c.rates.eer < 0.005);
    }

    #[test]
    fn malformed_lines_are_reported_with_their_line_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(
            &path,
            "{\"label\":\"a\",\"embedding\":[1,0]}\n{\"embedding\":[1,0]}\n",
        )
        .unwrap();
        let err = read_labelled(&path).unwrap_err().to_string();
        assert!(err.contains("x.jsonl:2"), "{err}");
    }
}
