//! The table of methods against what the server really serves: every gRPC
//! method it serves (as reflection lists them) is in the table, every
//! table method is served, and every HTTP route of the table reaches its
//! method rather than "no route".

use crate::helpers::*;
use dialogd::middleware::rpc_table::Rpc;
use prost::Message;
use std::collections::BTreeSet;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// One reflection question and its answer.
async fn reflect(app: &TestApp, question: MessageRequest) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(question),
    };
    ServerReflectionClient::new(app.channel.clone())
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

/// `/service/method` of every method the server serves.
async fn served_methods(app: &TestApp) -> BTreeSet<String> {
    let MessageResponse::ListServicesResponse(list) =
        reflect(app, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a list of services")
    };
    let mut methods = BTreeSet::new();
    for service in list.service.into_iter().map(|s| s.name) {
        let answer = reflect(app, MessageRequest::FileContainingSymbol(service.clone())).await;
        let MessageResponse::FileDescriptorResponse(files) = answer else {
            panic!("no descriptor of {service}")
        };
        for bytes in files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            for described in &file.service {
                let full = format!("{}.{}", file.package(), described.name());
                if full != service {
                    continue;
                }
                for method in &described.method {
                    methods.insert(format!("/{full}/{}", method.name()));
                }
            }
        }
    }
    methods
}

#[tokio::test]
async fn every_served_grpc_method_is_in_the_table_and_every_table_method_is_served() {
    let app = spawn_app().await;
    let served = served_methods(&app).await;
    assert!(
        served.len() > 15,
        "reflection lists the services: {served:?}"
    );
    for path in &served {
        assert!(
            Rpc::for_grpc_path(path).is_some(),
            "{path} is served but missing from the table of methods"
        );
    }
    for rpc in Rpc::ALL {
        let spec = rpc.spec();
        if spec.path.starts_with("/http.") {
            assert!(!spec.routes.is_empty(), "{rpc:?} is reachable by no route");
        } else {
            assert!(
                served.contains(spec.path),
                "{rpc:?} is in the table but not served"
            );
        }
    }
}

#[tokio::test]
async fn every_http_route_of_the_table_reaches_its_method() {
    let app = spawn_app().await;
    let client = plain_http().http1_only().build().unwrap();
    for rpc in Rpc::ALL {
        for route in rpc.spec().routes {
            let path = route.pattern.replace("{id}", "some-dialogue");
            let method = route.method.parse::<reqwest::Method>().unwrap();
            let mut call = client.request(method, format!("http://{}{path}", app.addr));
            if route.method != "GET" && route.method != "DELETE" {
                call = call.json(&serde_json::json!({}));
            }
            let answer = call.send().await.unwrap();
            let status = answer.status();
            let body = answer.text().await.unwrap();
            assert!(
                !body.contains("no route"),
                "{} {path} ({rpc:?}) is not routed: {status} {body}",
                route.method
            );
        }
    }
    // A path the table does not know is no route, in the HTTP caller's terms.
    let unknown = client
        .get(format!("http://{}/v1/dialogues/x/nothing", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.text().await.unwrap().contains("no route"));
}
