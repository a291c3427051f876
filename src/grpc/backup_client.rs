//! `dialogd store backup --addr`: fetches a backup of a running server's
//! store through `AdminService.ExportStore`.

use crate::grpc::pb::dialogue::v1 as pb;
use pb::admin_service_client::AdminServiceClient;
use tonic::metadata::{Ascii, MetadataValue};

/// Streams the server's backup into `sink`, chunk by chunk.
pub async fn fetch(
    addr: &str,
    key: Option<&str>,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(), String> {
    let url = super::endpoint(addr);
    let mut client = AdminServiceClient::connect(url.clone())
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?
        .max_decoding_message_size(16 << 20);
    let mut request = tonic::Request::new(pb::ExportStoreRequest {});
    if let Some(key) = key {
        let value = format!("Bearer {key}")
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| "the key is not valid ASCII".to_string())?;
        request.metadata_mut().insert("authorization", value);
    }
    let describe = |s: tonic::Status| format!("{url}: {:?}: {}", s.code(), s.message());
    let mut stream = client
        .export_store(request)
        .await
        .map_err(describe)?
        .into_inner();
    while let Some(chunk) = stream.message().await.map_err(describe)? {
        sink(&chunk.data).map_err(|e| format!("cannot write the backup: {e}"))?;
    }
    Ok(())
}
