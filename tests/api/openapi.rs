//! `GET /openapi.json`: public, and generated from the table of methods —
//! every HTTP route is in it, with every schema it references defined.

use crate::helpers::*;
use dialogd::config::AuthMode;
use dialogd::middleware::rpc_table::Rpc;
use serde_json::Value;

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_public_and_lists_every_http_route() {
    let app = spawn_app_with(|s| {
        s.auth.mode = AuthMode::Required;
        s.auth.jwt.hs256_secret_env = Some("DIALOGD_TEST_OPENAPI_SECRET".into());
        unsafe {
            std::env::set_var(
                "DIALOGD_TEST_OPENAPI_SECRET",
                "an-openapi-test-secret-of-32-bytes!!",
            )
        };
    })
    .await;
    let answer = plain_http()
        .build()
        .unwrap()
        .get(format!("http://{}/openapi.json", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "no credentials needed");
    let doc: Value = answer.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut routes = 0;
    for rpc in Rpc::ALL {
        for route in rpc.spec().routes {
            let path = route.pattern.to_string();
            let path = match path.matches("{id}").count() {
                2 => {
                    let at = path.rfind("{id}").unwrap();
                    format!("{}{{item_id}}{}", &path[..at], &path[at + 4..])
                }
                _ => path,
            };
            let op = &doc["paths"][&path][route.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {path} is documented", route.method);
            assert_eq!(op["operationId"], format!("{rpc:?}"));
            routes += 1;
        }
    }
    assert!(routes >= 28, "{routes}");
    // Protected routes say how to authenticate; the document itself not.
    assert!(doc["paths"]["/v1/dialogues"]["get"]["security"][0]["bearer"].is_array());
    assert_eq!(
        doc["paths"]["/openapi.json"]["get"]["security"][0],
        serde_json::json!({})
    );
    // The REST routes' messages are the proto's, in the JSON mapping.
    let converse = &doc["components"]["schemas"]["ConverseRequest"]["properties"];
    assert!(converse["createIfMissing"].is_object() && converse["requestId"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["Turn"]["properties"]["index"]["type"],
        "string"
    );
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} is defined"
        );
    }
}
