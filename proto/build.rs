//! Compiles proto/quorumid/v1/*.proto with a vendored protoc (no system protoc needed) and
//! writes the descriptor set that gRPC server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = ["quorumid/v1/registry.proto", "quorumid/v1/raft.proto"];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("quorumid_v1_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
