//! `GET /v1/dialogues/{id}:connect` with a real WebSocket client: several
//! turns over one socket with ConverseStream's messages, a turn cancelled
//! by a frame (nothing stored), errors as frames, auth at the upgrade
//! (header or subprotocol token), and close codes that say why.

use crate::helpers::*;
use crate::security::secured_app;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(
    app: &TestApp,
    dialogue: &str,
    headers: &[(&'static str, &str)],
) -> Result<Socket, String> {
    let url = format!("ws://{}/v1/dialogues/{dialogue}:connect", app.addr);
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
        .map_err(|e| e.to_string())
}

async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON frame (pings skipped).
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The frames of one turn, up to its `end` (or an error).
async fn turn(socket: &mut Socket, text: &str) -> Vec<Value> {
    send(
        socket,
        json!({"type": "turn", "content": [{"text": text}], "createIfMissing": true}),
    )
    .await;
    let mut frames = Vec::new();
    loop {
        let frame = next(socket).await;
        let done = frame.get("end").is_some() || frame.get("error").is_some();
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

fn reply_text(frames: &[Value]) -> String {
    frames
        .iter()
        .filter_map(|f| f["delta"]["text"].as_str())
        .collect()
}

#[tokio::test]
async fn turns_over_one_socket_are_streamed_and_stored() {
    let app = spawn_app().await;
    let mut socket = open(&app, "ws-1", &[]).await.unwrap();
    let first = turn(&mut socket, "hello socket").await;
    assert!(first[0].get("start").is_some(), "{first:?}");
    assert_eq!(reply_text(&first), "echo: hello socket");
    let second = turn(&mut socket, "and again").await;
    assert_eq!(reply_text(&second), "echo: and again");
    assert_eq!(second.last().unwrap()["end"]["turn"]["index"], "3");
    // A bad frame is an error frame; the socket stays open.
    socket.send(Message::Text("not json".into())).await.unwrap();
    let error = next(&mut socket).await;
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT", "{error}");
    assert_eq!(
        reply_text(&turn(&mut socket, "still here").await),
        "echo: still here"
    );
    socket.close(None).await.unwrap();
    assert_eq!(app.all_turns("ws-1").await.len(), 6);
}

#[tokio::test]
async fn a_cancel_frame_stops_the_running_turn_and_stores_nothing() {
    let app = spawn_app_with(|s| set_echo_delay(s, 200)).await;
    let mut socket = open(&app, "ws-cancel", &[]).await.unwrap();
    assert_eq!(reply_text(&turn(&mut socket, "quick").await), "echo: quick");
    send(
        &mut socket,
        json!({"type": "turn", "content": [{"text": "a b c d e f g h i j"}]}),
    )
    .await;
    assert!(next(&mut socket).await.get("start").is_some());
    send(&mut socket, json!({"type": "cancel"})).await;
    loop {
        let frame = next(&mut socket).await;
        if frame.get("cancelled").is_some() {
            break;
        }
        assert!(frame.get("delta").is_some(), "{frame}");
    }
    assert_eq!(reply_text(&turn(&mut socket, "after").await), "echo: after");
    let stored: Vec<String> = app
        .all_turns("ws-cancel")
        .await
        .iter()
        .map(turn_text)
        .collect();
    assert_eq!(stored, ["quick", "echo: quick", "after", "echo: after"]);
}

#[tokio::test]
async fn the_upgrade_is_authenticated_and_binary_frames_are_refused() {
    let (app, keys) = secured_app().await;
    let refused = open(&app, "ws-auth", &[]).await.unwrap_err();
    assert!(refused.contains("401"), "{refused}");
    let bearer = format!("Bearer {}", keys["alice"]);
    let mut socket = open(&app, "ws-auth", &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(
        reply_text(&turn(&mut socket, "with a header").await),
        "echo: with a header"
    );
    // Browsers: the token as a subprotocol, beside dialogd.v1.
    let offered = format!("dialogd.v1, dialogd.bearer.{}", keys["alice"]);
    let url = format!("ws://{}/v1/dialogues/ws-auth:connect", app.addr);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", offered.parse().unwrap());
    let (mut browser, answer) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(answer.headers()["sec-websocket-protocol"], "dialogd.v1");
    assert_eq!(
        reply_text(&turn(&mut browser, "as a browser").await),
        "echo: as a browser"
    );
    browser
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let closed = loop {
        match browser.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(closed.unwrap().code, CloseCode::Unsupported);
}

/// A client that stops reading is closed once a frame waits longer than
/// the send timeout: the server never buffers without bound, and the
/// running turn is cancelled, not stored.
#[tokio::test]
async fn a_reader_that_stops_reading_is_closed_and_its_turn_not_stored() {
    let app = spawn_app_with(|s| s.server.websocket_send_timeout_ms = 300).await;
    let mut socket = open(&app, "ws-slow", &[]).await.unwrap();
    // A reply of ~12 MB: far more than the sockets' buffers hold.
    let words = vec!["x".repeat(8 * 1024); 1_500].join(" ");
    send(
        &mut socket,
        json!({"type": "turn", "content": [{"text": words}], "createIfMissing": true}),
    )
    .await;
    // Read nothing for a while, then drain what was sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut ended = None;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await
    {
        match message {
            Ok(Message::Close(frame)) => {
                ended = frame.map(|f| f.code);
                break;
            }
            Ok(Message::Text(text)) => {
                assert!(
                    !text.contains("\"end\""),
                    "the turn completed for a stalled reader"
                )
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if let Some(code) = ended {
        assert_eq!(code, CloseCode::Policy);
    }
    let err = app.get("ws-slow", 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "nothing stored");
}
