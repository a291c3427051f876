//! Compression both ways: gRPC messages in gzip and zstd
//! (`grpc-encoding`), HTTP bodies with `Content-Encoding` and compressed
//! answers on `Accept-Encoding`; a decompressed body is bound by the
//! request limit, and streams are never held in a compressor.

use crate::helpers::*;
use dialogd::pb::dialogue::v1 as pb;
use dialogd::pb::dialogue::v1::dialogue_service_client::DialogueServiceClient;
use serde_json::{Value, json};
use std::io::{Read, Write};
use tonic::Code;
use tonic::codec::CompressionEncoding;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// An HTTP/1.1 client that leaves bodies as they arrive (no automatic
/// decompression), so the test sees what was on the wire.
fn raw_http() -> reqwest::Client {
    plain_http().http1_only().build().unwrap()
}

fn url(app: &TestApp, path: &str) -> String {
    format!("http://{}{path}", app.addr)
}

async fn compressed_client(app: &TestApp, encoding: CompressionEncoding) {
    let mut client = DialogueServiceClient::new(app.channel.clone())
        .send_compressed(encoding)
        .accept_compressed(encoding);
    let id = format!("{encoding:?}").to_lowercase();
    let mut request = converse_request(&id, &"compress me ".repeat(200));
    request.create_if_missing = true;
    let answer = client.converse(request).await.unwrap();
    assert_eq!(
        answer.metadata().get("grpc-encoding").unwrap(),
        id.as_str(),
        "the answer is compressed as the caller accepts"
    );
    let turn = answer.into_inner().turn.unwrap();
    assert_eq!(
        turn_text(&turn),
        format!("echo: {}", "compress me ".repeat(200))
    );
    // A stream, too.
    let mut request = converse_request(&id, "stream it");
    request.create_if_missing = true;
    let mut stream = client.converse_stream(request).await.unwrap();
    assert_eq!(stream.metadata().get("grpc-encoding").unwrap(), id.as_str());
    let mut events = 0;
    while stream.get_mut().message().await.unwrap().is_some() {
        events += 1;
    }
    assert!(events > 2);
    assert_eq!(app.all_turns(&id).await.len(), 4);
}

#[tokio::test]
async fn grpc_messages_travel_in_gzip_and_zstd() {
    let app = spawn_app().await;
    compressed_client(&app, CompressionEncoding::Gzip).await;
    compressed_client(&app, CompressionEncoding::Zstd).await;
    // A caller that asks for nothing gets plain messages.
    let mut plain = DialogueServiceClient::new(app.channel.clone());
    let answer = plain
        .list_dialogues(pb::ListDialoguesRequest::default())
        .await
        .unwrap();
    assert!(answer.metadata().get("grpc-encoding").is_none());
}

#[tokio::test]
async fn a_compressed_grpc_message_may_not_inflate_past_the_request_limit() {
    let app = spawn_app_with(|s| s.server.max_request_bytes = 64 * 1024).await;
    app.create("bomb").await;
    let mut client =
        DialogueServiceClient::new(app.channel.clone()).send_compressed(CompressionEncoding::Gzip);
    // 1 MiB of text compresses to about 1 KiB.
    let err = client
        .converse(converse_request("bomb", &"a".repeat(1 << 20)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("size limit"), "{}", err.message());
    assert!(app.all_turns("bomb").await.is_empty());
}

#[tokio::test]
async fn http_bodies_are_read_compressed_and_answers_compressed_on_request() {
    let app = spawn_app().await;
    let body = json!({"model": "echo", "messages": [{"role": "user", "content": "squeezed"}]});
    let response = raw_http()
        .post(url(&app, "/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("accept-encoding", "gzip")
        .body(gzip(body.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let answer: Value = serde_json::from_slice(&gunzip(&response.bytes().await.unwrap())).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: squeezed");

    // REST, zstd both ways.
    let body = json!({"content": [{"text": "zstd here"}], "createIfMissing": true});
    let response = raw_http()
        .post(url(&app, "/v1/dialogues/z:converse"))
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .header("accept-encoding", "zstd")
        .body(zstd::encode_all(body.to_string().as_bytes(), 3).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "zstd");
    let bytes = response.bytes().await.unwrap();
    let answer: Value = serde_json::from_slice(&zstd::decode_all(&bytes[..]).unwrap()).unwrap();
    assert_eq!(answer["turn"]["content"][0]["text"], "echo: zstd here");

    // Without Accept-Encoding the answer is plain.
    let response = raw_http()
        .get(url(&app, "/v1/dialogues/z"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-encoding").is_none());
    let _: Value = response.json().await.unwrap();
}

#[tokio::test]
async fn streamed_events_are_not_held_in_a_compressor() {
    let app = spawn_app().await;
    let response = raw_http()
        .post(url(&app, "/v1/chat/completions"))
        .header("accept-encoding", "gzip")
        .json(&json!({"model": "echo", "stream": true,
            "messages": [{"role": "user", "content": "flow freely"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-encoding").is_none());
    let text = response.text().await.unwrap();
    assert!(text.contains("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn bad_or_oversized_compressed_bodies_are_refused_and_store_nothing() {
    let app = spawn_app_with(|s| s.server.max_request_bytes = 64 * 1024).await;
    let send = async |encoding: &str, body: Vec<u8>| {
        let response = raw_http()
            .post(url(&app, "/v1/dialogues/bomb:converse"))
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json::<Value>().await.unwrap())
    };
    // A zip bomb: 8 MiB of JSON that gzip squeezes to a few KiB.
    let huge = json!({"content": [{"text": "a".repeat(8 << 20)}], "createIfMissing": true});
    let (status, error) = send("gzip", gzip(huge.to_string().as_bytes())).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 65536 bytes"),
        "{error}"
    );
    // Not gzip at all.
    let (status, error) = send("gzip", b"{\"content\": []}".to_vec()).await;
    assert_eq!(status, 400, "{error}");
    // An encoding dialogd does not read is named.
    let small = json!({"content": [{"text": "hi"}], "createIfMissing": true});
    let (status, error) = send("br", small.to_string().into_bytes()).await;
    assert_eq!(status, 400, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("Content-Encoding"), "{message}");
    assert!(message.contains("gzip"), "{message}");
    let missing = app
        .get_dialogue(pb::GetDialogueRequest {
            name: "dialogues/bomb".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}
