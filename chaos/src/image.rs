//! The node image, built from the binary under test before every invocation of the harness,
//! by the repository's one image script (`deploy/build-image.sh TAG BINARY`: a `FROM scratch`
//! image of the binary and the shared libraries `ldd` lists; nothing is pulled).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The image script, found from this crate's source directory.
pub fn default_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/build-image.sh")
}

/// The node binary the image script takes by default.
pub fn default_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/quorumid-target")))
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("ci/quorumid-node")
}

/// Builds `tag` from `binary` with `script`; answers the tag.
pub fn build(script: &Path, tag: &str, binary: &Path) -> anyhow::Result<String> {
    if !binary.is_file() {
        bail!(
            "no node binary at {}; build it first: cargo build --profile ci -p quorumid-node",
            binary.display()
        );
    }
    let output = Command::new("bash")
        .arg(script)
        .arg(tag)
        .arg(binary)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} {tag} {} failed ({}): {}",
            script.display(),
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(tag.to_string())
}
