//! The committed corpus, without a fuzzer: every input of `corpus/<target>/` passes its
//! target's checks (so a crash found once stays fixed), and the generated seeds are there and
//! current. After a change to what the seeds encode, `QUORUMID_WRITE_SEEDS=1 cargo test`
//! (in `node/fuzz`) rewrites them.

use std::fs;
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[test]
fn the_seeds_are_in_the_corpus() {
    let write = std::env::var_os("QUORUMID_WRITE_SEEDS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (target, name, bytes) in quorumid_fuzz::seeds() {
        let path = corpus(target).join(&name);
        if write {
            fs::create_dir_all(corpus(target)).unwrap();
            fs::write(&path, &bytes).unwrap();
        } else if fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "seeds missing or stale (rewrite them with QUORUMID_WRITE_SEEDS=1 cargo test): {stale:?}"
    );
}

#[test]
fn every_corpus_input_passes_its_checks() {
    for target in quorumid_fuzz::TARGETS {
        let mut inputs = 0;
        for entry in fs::read_dir(corpus(target)).unwrap() {
            let path = entry.unwrap().path();
            let data = fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| quorumid_fuzz::check(target, &data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            inputs += 1;
        }
        assert!(inputs > 0, "{target}: empty corpus");
    }
}
