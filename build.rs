//! Generates the gRPC code from `proto/` in pure Rust (protox, no system
//! `protoc`) and writes the descriptor set that server reflection serves.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/dialogue/v1/resources.proto",
    "proto/dialogue/v1/dialogue_service.proto",
    "proto/dialogue/v1/model_service.proto",
    "proto/dialogue/v1/auth_service.proto",
    "proto/dialogue/v1/admin_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("dialogue_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
