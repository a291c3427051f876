//! Code generated from `proto/` by build.rs: the messages (with serde per
//! the protobuf JSON mapping, for the REST routes), the tonic services and
//! clients, and the descriptor set reflection serves.

/// Package `dialogue.v1`.
pub mod dialogue {
    #[allow(clippy::large_enum_variant)]
    pub mod v1 {
        tonic::include_proto!("dialogue.v1");
        // serde per the protobuf JSON mapping, for the REST routes.
        include!(concat!(env!("OUT_DIR"), "/dialogue.v1.serde.rs"));

        /// Encoded descriptor set of the `dialogue.v1` protos, served by reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/dialogue_descriptor.bin"));
    }
}
