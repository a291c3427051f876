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
    let descriptors = fds.encode_to_vec();
    std::fs::write(out_dir.join("dialogue_descriptor.bin"), &descriptors)?;
    // Well-known types from pbjson-types: prost's types with serde impls
    // that follow the protobuf JSON mapping.
    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // Image bytes as `Bytes`: shared with the stored turn, not copied.
        .bytes(".dialogue.v1.InlineImage.data")
        // Malformed messages are INVALID_ARGUMENT (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::DialogdCodec")
        .compile_fds(fds)?;
    // serde for our messages, per the same mapping (dialogue.v1.serde.rs).
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".dialogue"])?;
    Ok(())
}
