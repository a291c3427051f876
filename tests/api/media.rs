//! Images, structured output and log probabilities against fake upstreams:
//! what dialogd forwards in each shape, what it stores and returns (inline
//! image bytes only in the FULL view), and the byte limits on images.

use crate::helpers::*;
use crate::rich::*;
use crate::upstream::{FakeUpstream, Planned};
use base64::Engine as _;
use dialogd::config::Capability;
use dialogd::pb::dialogue::v1 as pb;
use pb::content_part::Kind;
use pb::converse_stream_response::Event;
use serde_json::json;
use sha2::Digest;
use tonic::Code;

/// A tiny PNG's leading bytes: dialogd checks the MIME type, not the image.
const PNG: &[u8] = &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 4];

fn list(id: &str, view: pb::TurnView) -> pb::ListTurnsRequest {
    pb::ListTurnsRequest {
        parent: name(id),
        page_size: 10,
        page_token: String::new(),
        view: view as i32,
    }
}

fn inline_of(turn: &pb::Turn) -> pb::InlineImage {
    turn.content
        .iter()
        .find_map(|p| match &p.kind {
            Some(Kind::Image(pb::Image {
                source: Some(pb::image::Source::Inline(i)),
                ..
            })) => Some(i.clone()),
            _ => None,
        })
        .expect("an inline image")
}

#[tokio::test]
async fn images_inline_and_by_url_are_forwarded_stored_and_read_back_by_view() {
    for shape in SHAPES {
        let fake = FakeUpstream::start("eye").await;
        let app = spawn_app_with(|s| serve(s, &fake, shape)).await;
        let parts = vec![
            text("What is in these?"),
            image_url("https://example.com/cat.jpg", pb::ImageDetail::Low),
            inline_image("image/png", PNG),
        ];
        let reply = app
            .converse_with(request("img", parts, Default::default()))
            .await
            .unwrap();
        // The response names the image without echoing its bytes.
        let echoed = inline_of(reply.user_turn.as_ref().unwrap());
        assert!(echoed.data.is_empty());
        assert_eq!(echoed.size_bytes, PNG.len() as i64);

        let sent = forwarded(&fake.requests()[0]);
        let content = &sent.last().unwrap()["content"];
        let encoded = base64::engine::general_purpose::STANDARD.encode(PNG);
        match shape {
            Shape::OpenAi => {
                assert_eq!(
                    content[0],
                    json!({"type": "text", "text": "What is in these?"})
                );
                assert_eq!(
                    content[1],
                    json!({"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}})
                );
                assert_eq!(
                    content[2]["image_url"]["url"],
                    format!("data:image/png;base64,{encoded}")
                );
            }
            Shape::Anthropic => {
                assert_eq!(
                    content[1]["source"],
                    json!({"type": "url", "url": "https://example.com/cat.jpg"})
                );
                assert_eq!(
                    content[2]["source"],
                    json!({"type": "base64", "media_type": "image/png", "data": encoded})
                );
            }
        }

        let app = app.restart().await;
        let basic = app
            .list_turns(list("img", pb::TurnView::Unspecified))
            .await
            .unwrap();
        let image = inline_of(&basic.turns[0]);
        assert!(image.data.is_empty(), "BASIC leaves the bytes out");
        assert_eq!(image.sha256, hex(&sha2::Sha256::digest(PNG)));
        assert_eq!(image.mime_type, "image/png");
        let full = app
            .list_turns(list("img", pb::TurnView::Full))
            .await
            .unwrap();
        assert_eq!(&inline_of(&full.turns[0]).data[..], PNG);
        let dialogue = app
            .get_dialogue(pb::GetDialogueRequest {
                name: name("img"),
                last_turns: 2,
                view: pb::TurnView::Full as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(&inline_of(&dialogue.recent_turns[0]).data[..], PNG);
        let Some(Kind::Image(by_url)) = &full.turns[0].content[1].kind else {
            panic!()
        };
        assert_eq!(by_url.detail, pb::ImageDetail::Low as i32);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn image_bytes_are_limited_per_request_and_per_dialogue() {
    let app = spawn_app_with(|s| {
        s.limits.max_request_media_bytes = 100;
        s.limits.max_dialogue_media_bytes = 250;
    })
    .await;
    let image = |n: usize| inline_image("image/webp", &vec![7u8; n]);
    let too_big = app
        .converse_with(request("lim", vec![image(101)], Default::default()))
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&too_big), ["content"]);
    let bad = app
        .converse_with(request(
            "lim",
            vec![
                inline_image("text/html", b"<p>"),
                image_url("file:///etc/passwd", pb::ImageDetail::Unspecified),
            ],
            Default::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&bad),
        ["content[0].image.mime_type", "content[1].image.url"]
    );
    for _ in 0..2 {
        app.converse_with(request("lim", vec![image(100)], Default::default()))
            .await
            .unwrap();
    }
    let full = app
        .converse_with(request("lim", vec![image(100)], Default::default()))
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&full).as_deref(), Some("DIALOGUE_MEDIA_LIMIT"));
    // The count is durable: a restart does not reset it.
    let app = app.restart().await;
    let still = app
        .converse_with(request("lim", vec![image(60)], Default::default()))
        .await
        .unwrap_err();
    assert_eq!(
        error_reason(&still).as_deref(),
        Some("DIALOGUE_MEDIA_LIMIT")
    );
    app.converse_with(request("lim", vec![image(50)], Default::default()))
        .await
        .unwrap();
}

#[tokio::test]
async fn json_schema_is_forwarded_in_each_shape() {
    for shape in SHAPES {
        let fake = FakeUpstream::start("js").await;
        let app = spawn_app_with(|s| {
            serve(s, &fake, shape);
            // Anthropic has no JSON mode: the schema goes in the system
            // prompt, which a model takes only when configured to.
            let mut as_configured = model_m(s).clone();
            as_configured.name = "m-default".into();
            s.models.push(as_configured);
            model_m(s).capabilities = Some(vec![Capability::JsonSchema]);
        })
        .await;
        fake.plan_replies([Planned::text(r#"{"city": "Paris"}"#)]);
        let generation = pb::GenerationConfig {
            response_format: Some(pb::ResponseFormat {
                format: Some(pb::response_format::Format::JsonSchema(
                    pb::JsonSchemaFormat {
                        name: "place".into(),
                        schema: Some(json_struct(weather_schema())),
                        strict: true,
                        description: "where it is".into(),
                    },
                )),
            }),
            ..Default::default()
        };
        let reply = app
            .converse_with(request("js", vec![text("Where?")], generation.clone()))
            .await
            .unwrap();
        assert_eq!(
            turn_text(reply.turn.as_ref().unwrap()),
            r#"{"city": "Paris"}"#
        );
        let by_default = app
            .converse_with(request(
                "js-2",
                vec![text("Where?")],
                pb::GenerationConfig {
                    model: Some("m-default".into()),
                    ..generation
                },
            ))
            .await;
        match shape {
            Shape::OpenAi => assert!(by_default.is_ok()),
            Shape::Anthropic => {
                let refused = by_default.unwrap_err();
                assert_eq!(refused.code(), Code::FailedPrecondition);
                assert!(refused.message().contains("json_schema"));
            }
        }
        let sent = &fake.requests()[0];
        match shape {
            Shape::OpenAi => assert_eq!(
                sent["response_format"],
                json!({"type": "json_schema", "json_schema": {
                    "name": "place", "description": "where it is", "schema": weather_schema(), "strict": true
                }})
            ),
            Shape::Anthropic => {
                let system = sent["system"].as_str().unwrap();
                assert!(system.contains(&weather_schema().to_string()), "{system}");
            }
        }
    }
}

#[tokio::test]
async fn log_probabilities_come_back_unary_and_with_each_delta() {
    let fake = FakeUpstream::start("lp").await;
    let app = spawn_app_with(|s| serve(s, &fake, Shape::OpenAi)).await;
    let generation = pb::GenerationConfig {
        logprobs: true,
        top_logprobs: Some(2),
        ..Default::default()
    };
    let reply = app
        .converse_with(request(
            "lp",
            vec![text("one two three")],
            generation.clone(),
        ))
        .await
        .unwrap();
    let tokens: Vec<&str> = reply.logprobs.iter().map(|l| l.token.as_str()).collect();
    assert_eq!(tokens, ["lp: ", "one ", "two ", "three"]);
    assert_eq!(reply.logprobs[1].top_logprobs.len(), 2);
    let sent = &fake.requests()[0];
    assert_eq!(
        (sent["logprobs"].clone(), sent["top_logprobs"].clone()),
        (json!(true), json!(2))
    );

    let (events, error) = app
        .stream(request("lp", vec![text("four five")], generation))
        .await;
    assert!(error.is_none(), "{error:?}");
    let mut covered = 0;
    for event in &events {
        if let Event::Delta(d) = event {
            let tokens: String = d.logprobs.iter().map(|l| l.token.as_str()).collect();
            assert_eq!(tokens, d.text, "each delta carries its own tokens");
            covered += d.logprobs.len();
        }
    }
    assert_eq!(covered, 3);
    // Not stored: a later read has the text only.
    let turns = app.all_turns("lp").await;
    assert_eq!(turn_text(&turns[3]), "lp: four five");
}

#[tokio::test]
async fn rest_carries_rich_content_in_the_protobuf_json_mapping() {
    let app = spawn_app().await;
    let http = plain_http().build().unwrap();
    let base = format!("http://{}/v1/dialogues", app.addr);
    let post = |path: String, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let response = http.post(path).json(&body).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let png = base64::engine::general_purpose::STANDARD.encode(PNG);
    let tools = json!({"tools": [{"name": "lookup", "parameters": {"type": "object"}}]});
    let (status, asked) = post(
        format!("{base}/rest-rich:converse"),
        json!({"createIfMissing": true, "generation": tools,
               "content": [{"text": "call lookup {\"q\": 1}"},
                           {"image": {"inline": {"mimeType": "image/png", "data": png}, "detail": "IMAGE_DETAIL_HIGH"}}]}),
    )
    .await;
    assert_eq!(status, 200, "{asked}");
    let call = &asked["turn"]["content"][0]["toolCall"];
    assert_eq!(
        (call["name"].as_str(), call["arguments"].as_str()),
        (Some("lookup"), Some(r#"{"q": 1}"#))
    );
    let (status, answered) = post(
        format!("{base}/rest-rich:converse"),
        json!({"generation": tools, "content": [{"toolResult": {"callId": call["id"], "content": [{"text": "42"}], "isError": true}}]}),
    )
    .await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["userTurn"]["role"], "ROLE_TOOL");
    let turns: serde_json::Value = http
        .get(format!("{base}/rest-rich/turns?view=TURN_VIEW_FULL"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        turns["turns"][0]["content"][1]["image"]["inline"]["data"],
        png
    );
    assert_eq!(
        turns["turns"][2]["content"][0]["toolResult"]["isError"],
        true
    );
    // A refused stream is an HTTP error, not an event stream.
    let refused = http
        .post(format!("{base}/rest-rich:converseStream"))
        .json(&json!({"content": [{"toolResult": {"callId": "nope", "content": [{"text": "x"}]}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        body["error"]["details"][1]["fieldViolations"][0]["field"],
        "content[0].tool_result.call_id"
    );
}
