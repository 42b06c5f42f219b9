//! Face photographs through the API: the node finds, aligns and embeds the face (YuNet +
//! SFace, `quorumid_biometrics::extract`) and keeps only the embedding. On the ORL images of
//! `node/biometrics/models/fetch.sh` (run by `.ci/prereqs`), prepared as in
//! `../shared/data/README.md`, and the OpenCV embeddings of the same images in
//! `../shared/data/faces/orl-sface.jsonl`.

mod common;

use std::path::{Path, PathBuf};

use common::{TestCluster, enroll_request, face_template, reason_of};
use quorumid_biometrics::extract::prepare::orl_recipe;
use quorumid_biometrics::extract::{BgrImage, default_models_dir};
use quorumid_node::config::RaftSettings;
use quorumid_proto::v1 as pb;
use tonic::Code;

/// ORL `subject`'s image `image`, prepared by the recipe (resized, padded) and encoded as a
/// binary PGM, as a client would send a photograph.
fn orl_photo(subject: u32, image: u32) -> Vec<u8> {
    let dir = default_models_dir().expect("QUORUMID_FACE_MODELS or HOME is set");
    let path = dir.join(format!("orl/s{subject}/{image}.pgm"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run node/biometrics/models/fetch.sh)",
            path.display()
        )
    });
    // The ORL files are binary PGMs of 92x112: a 15-byte header, then the pixels.
    let gray = &bytes[bytes.len() - 92 * 112..];
    let prepared = orl_recipe(&BgrImage::from_gray(92, 112, gray).unwrap()).unwrap();
    pgm(
        prepared.width(),
        prepared.height(),
        prepared.data().iter().step_by(3).copied(),
    )
}

fn pgm(width: usize, height: usize, pixels: impl Iterator<Item = u8>) -> Vec<u8> {
    let mut out = format!("P5\n{width} {height}\n255\n").into_bytes();
    out.extend(pixels);
    out
}

fn photo(bytes: Vec<u8>) -> pb::Template {
    pb::Template {
        format: pb::TemplateFormat::FaceImage as i32,
        model_id: String::new(),
        data: bytes,
    }
}

/// OpenCV's SFace embedding of the same ORL image (`../shared/data/faces/orl-sface.jsonl`).
fn opencv_embedding(subject: u64, image: u64) -> Vec<f32> {
    let path: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/faces/orl-sface.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|v| v["subject"] == subject && v["image"] == image)
        .map(|v| {
            v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .expect("the ORL embedding is in the file")
}

async fn verify(
    cluster: &TestCluster,
    node: u64,
    id: &str,
    probe: pb::Template,
) -> Result<bool, tonic::Status> {
    let response = cluster.verify_probe(node, id, probe).await?;
    Ok(response.probe.expect("a probe result").matched)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn photographs_enroll_verify_and_deduplicate_as_embeddings() {
    let cluster = TestCluster::start_with_face_models(3, RaftSettings::default()).await;
    let mut request = enroll_request("photo-1", "ON", "PHOTO1");
    request.templates = vec![photo(orl_photo(1, 1))];
    let id = cluster
        .registry(2)
        .await
        .enroll(request)
        .await
        .expect("a photograph enrolls")
        .into_inner()
        .identity_id;

    // Another photograph of the same person matches, at another node; another person's
    // does not.
    assert!(
        verify(&cluster, 3, &id, photo(orl_photo(1, 2)))
            .await
            .unwrap()
    );
    assert!(
        !verify(&cluster, 3, &id, photo(orl_photo(2, 1)))
            .await
            .unwrap()
    );
    // What is stored is an SFace embedding: OpenCV's embedding of another image of the same
    // person matches it, and another person's does not.
    assert!(
        verify(&cluster, 1, &id, face_template(&opencv_embedding(1, 3)))
            .await
            .unwrap()
    );
    assert!(
        !verify(&cluster, 1, &id, face_template(&opencv_embedding(3, 1)))
            .await
            .unwrap()
    );

    // The same face under another document is refused by the 1:N de-dup search.
    let mut again = enroll_request("photo-2", "QC", "PHOTO2");
    again.templates = vec![photo(orl_photo(1, 4))];
    let err = cluster.registry(1).await.enroll(again).await.unwrap_err();
    assert_eq!(reason_of(&err), "DUPLICATE_BIOMETRIC", "{}", err.message());

    // A photograph without a face, one that is not an image, one naming a model.
    let blank = pgm(264, 304, std::iter::repeat_n(128, 264 * 304));
    let err = verify(&cluster, 1, &id, photo(blank)).await.unwrap_err();
    assert_eq!(
        (err.code(), reason_of(&err).as_str()),
        (Code::InvalidArgument, "NO_FACE"),
        "{}",
        err.message()
    );
    assert!(
        err.message().starts_with("probe: no face"),
        "{}",
        err.message()
    );
    let err = verify(&cluster, 1, &id, photo(b"not an image at all".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("cannot be decoded"),
        "{}",
        err.message()
    );
    let mut named = photo(orl_photo(1, 2));
    named.model_id = "sface-2021dec".into();
    let err = verify(&cluster, 1, &id, named).await.unwrap_err();
    assert!(
        err.message().contains("model_id must be empty"),
        "{}",
        err.message()
    );
    cluster.shutdown().await;

    // A node without face models says so, and still takes embeddings.
    let plain = TestCluster::start(1, RaftSettings::default()).await;
    let mut request = enroll_request("photo-3", "ON", "PHOTO3");
    request.templates = vec![photo(orl_photo(5, 1))];
    let err = plain.registry(1).await.enroll(request).await.unwrap_err();
    assert_eq!(
        (err.code(), reason_of(&err).as_str()),
        (Code::FailedPrecondition, "NO_FACE_MODELS"),
        "{}",
        err.message()
    );
    let mut request = enroll_request("photo-4", "ON", "PHOTO4");
    request.templates = vec![face_template(&opencv_embedding(5, 1))];
    plain.registry(1).await.enroll(request).await.unwrap();
    plain.shutdown().await;
}
