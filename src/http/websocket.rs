//! `GET /v1/dialogues/{id}:connect`: a WebSocket for interactive chat
//! clients. The upgrade request is authenticated like any call (a bearer
//! header, `x-api-key`, or for browsers a `dialogd.bearer.<token>`
//! subprotocol beside `dialogd.v1`), rate-limited and audited. Then the
//! client sends turns as JSON text frames — `{"type": "turn", …}` holding a
//! ConverseRequest in the JSON mapping (`content`, `requestId`,
//! `createIfMissing`, `generation`, …; the dialogue is the path's) — and
//! receives the same messages as ConverseStream (`start`, `delta`, `end`),
//! one frame each; `{"type": "cancel"}` stops the running turn (nothing is
//! stored; a `{"cancelled": {}}` frame confirms). Several turns run one
//! after another over one socket; a failure is an `{"error": …}` frame in
//! google.rpc's JSON shape and the socket stays open.
//!
//! The server pings every 20 s; a reader too slow to take a frame within
//! `server.websocket_send_timeout_ms` (30 s) is closed (1008) and its
//! running turn cancelled, so nothing is buffered without bound. Close codes:
//! 1000 when the client closes, 1001 when the server drains, 1003 for a
//! binary frame, 1008 for a too-slow reader.

use super::Front;
use super::error::{self, ErrorShape};
use crate::failure::Failure;
use crate::grpc::dialogue_calls::CallContext;
use crate::grpc::pb::dialogue::v1 as pb;
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};
use std::time::Duration;
use tonic::Status;

/// The subprotocol dialogd speaks, and the prefix of a token offered as
/// one (browsers cannot set headers on a WebSocket).
pub const SUBPROTOCOL: &str = "dialogd.v1";
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "dialogd.bearer.";

const PING_EVERY: Duration = Duration::from_secs(20);

fn refused(status: &Status) -> Response {
    error::response(ErrorShape::Google, status).into_response()
}

/// The upgrade; everything after runs in `session`.
pub async fn connect(front: &Front, id: &str, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let cx = match CallContext::new(&parts.headers, &parts.extensions) {
        Ok(cx) => cx,
        Err(e) => return refused(&Status::from(Failure::from(e))),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let failure = Failure::invalid(
                "upgrade",
                format!(
                    "{id}:connect is a WebSocket: send a WebSocket upgrade ({})",
                    rejection.body_text()
                ),
            );
            return refused(&failure.into());
        }
    };
    let name = format!("dialogues/{id}");
    let front = front.clone();
    upgrade
        .protocols([SUBPROTOCOL])
        .on_upgrade(move |socket| session(socket, front, cx, name))
}

/// What the client asked for in a frame.
enum Ask {
    Turn(Box<pb::ConverseRequest>),
    Cancel,
}

fn ask(text: &str, name: &str) -> Result<Ask, Status> {
    let mut value: Value = serde_json::from_str(text)
        .map_err(|e| Status::from(Failure::invalid("frame", format!("is not JSON: {e}"))))?;
    let kind = value
        .as_object_mut()
        .and_then(|o| o.remove("type"))
        .and_then(|t| t.as_str().map(str::to_owned));
    match kind.as_deref() {
        Some("cancel") => Ok(Ask::Cancel),
        Some("turn") => {
            value["name"] = json!(name);
            serde_json::from_value(value)
                .map(|r| Ask::Turn(Box::new(r)))
                .map_err(|e| Failure::invalid("frame", format!("is not a valid turn: {e}")).into())
        }
        _ => Err(Failure::invalid("frame.type", "must be \"turn\" or \"cancel\"").into()),
    }
}

fn frame(value: &Value) -> Message {
    Message::Text(Utf8Bytes::from(value.to_string()))
}

fn error_frame(status: &Status) -> Message {
    frame(&json!({"error": error::body(ErrorShape::Google, status)["error"]}))
}

type Turn = BoxStream<'static, Result<pb::ConverseStreamResponse, Status>>;

/// Sends `message`, giving a reader that does not take it in time up.
async fn send(socket: &mut WebSocket, message: Message, patience: Duration) -> Result<(), u16> {
    match tokio::time::timeout(patience, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(1000),
        Err(_) => Err(1008),
    }
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let close = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(close))),
    )
    .await;
}

async fn session(mut socket: WebSocket, front: Front, cx: CallContext, name: String) {
    let mut turn: Option<Turn> = None;
    let mut pings = tokio::time::interval(PING_EVERY);
    pings.tick().await;
    let stopping = front.stop.clone();
    let patience = front.websocket_send_timeout;
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return close(socket, 1001, "the server is shutting down").await,
            _ = pings.tick() => {
                if let Err(code) = send(&mut socket, Message::Ping(Default::default()), patience).await {
                    return close(socket, code, "too slow").await;
                }
            }
            event = async { turn.as_mut()?.next().await }, if turn.is_some() => {
                let message = match event {
                    None => { turn = None; continue; }
                    Some(Ok(message)) => match super::json_mapping::to_json(&message) {
                        Ok(json) => frame(&json),
                        Err(e) => error_frame(&Failure::new(
                            crate::failure::ErrorKind::Internal,
                            "ENCODING_FAILED",
                            e.to_string(),
                        ).into()),
                    },
                    Some(Err(status)) => { turn = None; error_frame(&status) }
                };
                if let Err(code) = send(&mut socket, message, patience).await {
                    return close(socket, code, "the client did not read in time").await;
                }
            }
            incoming = socket.recv() => {
                let reply = match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Binary(_))) => return close(socket, 1003, "send JSON text frames").await,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Text(text))) => match ask(&text, &name) {
                        Err(status) => error_frame(&status),
                        Ok(Ask::Cancel) => match turn.take() {
                            Some(_) => frame(&json!({"cancelled": {}})),
                            None => error_frame(&Failure::new(
                                crate::failure::ErrorKind::FailedPrecondition,
                                "NO_RUNNING_TURN",
                                "no turn is running",
                            ).into()),
                        },
                        Ok(Ask::Turn(_)) if turn.is_some() => error_frame(&Failure::new(
                            crate::failure::ErrorKind::FailedPrecondition,
                            "TURN_RUNNING",
                            "a turn is running on this socket; wait for its end or cancel it",
                        ).into()),
                        Ok(Ask::Turn(request)) => match start(&front, &cx, *request).await {
                            Ok(stream) => { turn = Some(stream); continue; }
                            Err(status) => error_frame(&status),
                        },
                    },
                };
                if let Err(code) = send(&mut socket, reply, patience).await {
                    return close(socket, code, "the client did not read in time").await;
                }
            }
        }
    }
}

/// Starts a turn: charged to the caller's request rate like a call.
async fn start(
    front: &Front,
    cx: &CallContext,
    request: pb::ConverseRequest,
) -> Result<Turn, Status> {
    front.dialogues.charge_turn(cx).await?;
    let stream = front.dialogues.converse_stream(cx, request).await?;
    Ok(stream.boxed())
}
