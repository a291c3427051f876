//! Health, reflection and graceful shutdown.

use crate::helpers::*;
use dialogd::pb::dialogue::v1 as pb;
use pb::converse_stream_response::Event;
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in [
        "",
        "dialogue.v1.DialogueService",
        "dialogue.v1.ModelService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services() {
    let app = spawn_app().await;
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(app.channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer")
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "dialogue.v1.DialogueService",
            "dialogue.v1.ModelService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.contains(&expected.to_string()),
                "{expected} missing from {names:?}"
            );
        }
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut client = ServerReflectionClient::new(app.channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "dialogue.v1.DialogueService".into(),
            )),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        assert!(matches!(
            response.message_response,
            Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()
        ));
    }
}

/// grpcurl- and Postman-style clients resolve a status's details by
/// reflection: the google.rpc detail types must be served too.
#[tokio::test]
async fn reflection_serves_the_error_detail_types() {
    use prost::Message;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    for symbol in [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
        "google.rpc.Status",
    ] {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::once(request))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("{symbol} unknown to reflection: {response:?}")
        };
        let short = symbol.rsplit('.').next().unwrap();
        let described = files.file_descriptor_proto.iter().any(|bytes| {
            prost_types::FileDescriptorProto::decode(&bytes[..])
                .unwrap()
                .message_type
                .iter()
                .any(|m| m.name() == short)
        });
        assert!(described, "{symbol} not described");
    }
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish_and_store_its_turn() {
    let mut app = spawn_app_with(|s| set_echo_delay(s, 100)).await;
    app.create("drain").await;
    let mut stream = app
        .converse_stream(converse_request("drain", "one two three four"))
        .await
        .unwrap();
    assert!(matches!(
        stream.message().await.unwrap().unwrap().event,
        Some(Event::Start(_))
    ));

    app.signal_stop();
    let server = app.take_server();
    let mut last = None;
    while let Some(msg) = stream.message().await.expect("the stream is not cut") {
        last = msg.event;
    }
    assert!(
        matches!(last, Some(Event::End(_))),
        "stream completed: {last:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("drain finishes")
        .unwrap()
        .expect("clean stop");

    // The drained turn was stored and flushed.
    let app = spawn_app_on(app.data_dir.clone()).await;
    assert_eq!(app.get("drain", 0).await.unwrap().turn_count, 2);
}

#[tokio::test]
async fn shutdown_cuts_streams_after_the_drain_timeout() {
    let mut app = spawn_app_with(|s| {
        set_echo_delay(s, 1000);
        s.server.drain_timeout_secs = 1;
    })
    .await;
    app.create("cut").await;
    let mut stream = app
        .converse_stream(converse_request("cut", "a b c d e f g h i j"))
        .await
        .unwrap();
    assert!(matches!(
        stream.message().await.unwrap().unwrap().event,
        Some(Event::Start(_))
    ));
    let started = std::time::Instant::now();
    app.signal_stop();
    tokio::time::timeout(Duration::from_secs(10), app.take_server())
        .await
        .expect("drain is bounded")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    // The client sees an error, never a clean end that looks complete.
    let mut ended_cleanly = false;
    loop {
        match stream.message().await {
            Ok(Some(msg)) => ended_cleanly |= matches!(msg.event, Some(Event::End(_))),
            Ok(None) => break,
            Err(_) => break,
        }
    }
    assert!(!ended_cleanly);
}

#[tokio::test]
async fn a_health_watch_does_not_hold_the_drain_open() {
    let mut app = spawn_app_with(|s| {
        set_echo_delay(s, 100);
        s.server.drain_timeout_secs = 10;
    })
    .await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // Real work in flight too: the drain waits for it, not for the watch.
    app.create("busy").await;
    let mut stream = app
        .converse_stream(converse_request("busy", "one two three"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    app.signal_stop();
    let server = app.take_server();
    while stream.message().await.expect("the turn finishes").is_some() {}
    let last_turn_done = started.elapsed();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the drain ends with the work, not the watch")
        .unwrap()
        .expect("clean stop");
    let exit = started.elapsed();
    assert!(
        exit < last_turn_done + Duration::from_millis(500),
        "exit {exit:?}, last turn done {last_turn_done:?}"
    );
    // The watch heard NOT_SERVING, then ended UNAVAILABLE.
    let mut statuses = Vec::new();
    let ending = loop {
        match watch.message().await {
            Ok(Some(update)) => statuses.push(update.status),
            Ok(None) => break None,
            Err(status) => break Some(status.code()),
        }
    };
    assert!(
        statuses.contains(&(ServingStatus::NotServing as i32)),
        "{statuses:?}"
    );
    assert_eq!(ending, Some(tonic::Code::Unavailable));
}

/// A connection that never finishes sending its request's headers holds
/// the drain to its timeout; then it is cut, and its task has let go of
/// the store by the time the server has stopped: the data dir can be
/// reopened at once (an embedding program restarting dialogd in-process).
#[tokio::test]
async fn after_a_stop_no_connection_holds_the_store() {
    if redis_store() {
        return; // the embedded store's lock is what is checked
    }
    let mut app = spawn_app_with(|s| s.server.drain_timeout_secs = 1).await;
    let mut half_sent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    half_sent
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: dialogd\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.signal_stop();
    tokio::time::timeout(Duration::from_secs(10), app.take_server())
        .await
        .expect("the drain is bounded")
        .unwrap()
        .expect("clean stop");
    let db = std::fs::File::open(app.settings.store.data_dir.join("db")).unwrap();
    assert!(
        db.try_lock().is_ok(),
        "the store is still open after the server stopped"
    );
    drop(half_sent);
}
