//! Tool calling end to end against fake upstreams of both shapes: what
//! dialogd forwards, what the caller gets (unary and streamed), what is
//! stored and read back after a restart, and the rules of answering calls.

use crate::helpers::*;
use crate::rich::*;
use crate::upstream::{FakeUpstream, Planned};
use dialogd::pb::dialogue::v1 as pb;
use pb::content_part::Kind;
use pb::converse_stream_response::Event;
use serde_json::{Value, json};
use tonic::Code;

const ARGS: &str = r#"{"city":"Paris"}"#;

/// What the upstream was told about tools and the calls so far, checked
/// in its own shape.
fn assert_forwarded_loop(shape: Shape, first: &Value, second: &Value) {
    match shape {
        Shape::OpenAi => {
            assert_eq!(first["tools"][0]["type"], "function");
            assert_eq!(first["tools"][0]["function"]["name"], "get_weather");
            assert_eq!(
                first["tools"][0]["function"]["parameters"],
                weather_schema()
            );
            let m = forwarded(second);
            let n = m.len();
            assert_eq!(m[n - 2]["role"], "assistant");
            assert_eq!(m[n - 2]["tool_calls"][0]["id"], "call_1");
            assert_eq!(m[n - 2]["tool_calls"][0]["function"]["arguments"], ARGS);
            assert_eq!(
                m[n - 1],
                json!({"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"})
            );
        }
        Shape::Anthropic => {
            assert_eq!(first["tools"][0]["name"], "get_weather");
            assert_eq!(first["tools"][0]["input_schema"], weather_schema());
            let m = forwarded(second);
            let n = m.len();
            assert_eq!(m[n - 2]["role"], "assistant");
            assert_eq!(m[n - 2]["content"][0]["type"], "tool_use");
            assert_eq!(m[n - 2]["content"][0]["input"], json!({"city": "Paris"}));
            assert_eq!(m[n - 1]["role"], "user");
            assert_eq!(m[n - 1]["content"][0]["type"], "tool_result");
            assert_eq!(m[n - 1]["content"][0]["tool_use_id"], "call_1");
        }
    }
    // The tools go with every turn that declares them.
    assert!(second["tools"].is_array());
}

/// The streamed tool-call pieces of a stream, assembled: (id, name, arguments).
fn streamed_calls(events: &[Event]) -> Vec<(String, String, String)> {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for event in events {
        if let Event::ToolCallDelta(d) = event {
            let index = d.index as usize;
            if index == calls.len() {
                assert!(
                    !d.id.is_empty() && !d.name.is_empty(),
                    "id and name come first"
                );
                calls.push((d.id.clone(), d.name.clone(), String::new()));
            }
            calls[index].2.push_str(&d.arguments);
        }
    }
    calls
}

#[tokio::test]
async fn a_tool_loop_runs_unary_and_streamed_and_reads_back_after_a_restart() {
    for shape in SHAPES {
        let fake = FakeUpstream::start("gpt").await;
        let app = spawn_app_with(|s| serve(s, &fake, shape)).await;
        let tools = with_tools(&["get_weather"]);

        // Unary: the call, then its result, then the answer.
        fake.plan_replies([Planned::calls(&[("call_1", "get_weather", ARGS)])]);
        let asked = app
            .converse_with(request(
                "unary",
                vec![text("Weather in Paris?")],
                tools.clone(),
            ))
            .await
            .unwrap();
        assert_eq!(
            asked.finish_reason,
            pb::FinishReason::ToolCalls as i32,
            "{shape:?}"
        );
        let turn = asked.turn.unwrap();
        assert_eq!(
            calls_of(&turn),
            [("call_1".into(), "get_weather".into(), ARGS.into())]
        );
        let answered = app
            .converse_with(request(
                "unary",
                vec![tool_result("call_1", "18C and sunny")],
                tools.clone(),
            ))
            .await
            .unwrap();
        assert_eq!(answered.user_turn.unwrap().role, pb::Role::Tool as i32);
        assert_eq!(
            turn_text(answered.turn.as_ref().unwrap()),
            "gpt: tool said 18C and sunny"
        );
        let requests = fake.requests();
        assert_forwarded_loop(shape, &requests[0], &requests[1]);

        // Streamed: the call forms piece by piece; the end holds it whole.
        fake.plan_replies([Planned::calls(&[("call_1", "get_weather", ARGS)])]);
        let (events, error) = app
            .stream(request(
                "streamed",
                vec![text("Weather in Paris?")],
                tools.clone(),
            ))
            .await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(
            streamed_calls(&events),
            [("call_1".into(), "get_weather".into(), ARGS.into())]
        );
        let Some(Event::End(end)) = events.last() else {
            panic!("no end")
        };
        assert_eq!(end.finish_reason, pb::FinishReason::ToolCalls as i32);
        assert_eq!(calls_of(end.turn.as_ref().unwrap()).len(), 1);
        let (events, error) = app
            .stream(request(
                "streamed",
                vec![tool_result("call_1", "18C and sunny")],
                tools.clone(),
            ))
            .await;
        assert!(error.is_none(), "{error:?}");
        let Some(Event::End(end)) = events.last() else {
            panic!("no end")
        };
        assert_eq!(
            turn_text(end.turn.as_ref().unwrap()),
            "gpt: tool said 18C and sunny"
        );
        let requests = fake.requests();
        assert_forwarded_loop(shape, &requests[2], &requests[3]);

        // Both loops are stored whole and survive a restart.
        let app = app.restart().await;
        for id in ["unary", "streamed"] {
            let turns = app.all_turns(id).await;
            let roles: Vec<i32> = turns.iter().map(|t| t.role).collect();
            let expected = [
                pb::Role::User,
                pb::Role::Assistant,
                pb::Role::Tool,
                pb::Role::Assistant,
            ];
            assert_eq!(roles, expected.map(|r| r as i32), "{shape:?} {id}");
            assert_eq!(
                calls_of(&turns[1]),
                [("call_1".into(), "get_weather".into(), ARGS.into())]
            );
            let Some(Kind::ToolResult(result)) = &turns[2].content[0].kind else {
                panic!("a tool result")
            };
            assert_eq!(
                (result.call_id.as_str(), turn_text(&turns[2]).as_str()),
                ("call_1", "")
            );
            assert_eq!(result.content, [text("18C and sunny")]);
        }
    }
}

#[tokio::test]
async fn parallel_calls_come_back_together_and_must_each_be_answered_once() {
    for shape in SHAPES {
        let fake = FakeUpstream::start("gpt").await;
        let app = spawn_app_with(|s| serve(s, &fake, shape)).await;
        let tools = pb::GenerationConfig {
            parallel_tool_calls: Some(false),
            ..with_tools(&["get_weather", "get_time"])
        };
        fake.plan_replies([Planned::calls(&[
            ("call_a", "get_weather", ARGS),
            ("call_b", "get_time", r#"{"city":"Oslo"}"#),
        ])]);
        let (events, error) = app
            .stream(request(
                "par",
                vec![text("Paris weather, Oslo time?")],
                tools.clone(),
            ))
            .await;
        assert!(error.is_none(), "{error:?}");
        let calls = streamed_calls(&events);
        assert_eq!(calls.len(), 2, "{shape:?}");
        assert_eq!(
            (calls[1].0.as_str(), calls[1].2.as_str()),
            ("call_b", r#"{"city":"Oslo"}"#)
        );
        let sent = &fake.requests()[0];
        match shape {
            Shape::OpenAi => assert_eq!(sent["parallel_tool_calls"], false),
            Shape::Anthropic => assert_eq!(sent["tool_choice"]["disable_parallel_tool_use"], true),
        }

        // Half an answer, an unknown call, a call answered twice: refused,
        // nothing stored.
        let refusals = [
            (vec![tool_result("call_a", "sunny")], "content"),
            (
                vec![
                    tool_result("call_a", "x"),
                    tool_result("call_b", "y"),
                    tool_result("call_z", "z"),
                ],
                "content[2].tool_result.call_id",
            ),
            (
                vec![
                    tool_result("call_a", "x"),
                    tool_result("call_a", "y"),
                    tool_result("call_b", "z"),
                ],
                "content[1].tool_result.call_id",
            ),
            (vec![text("never mind")], "content"),
        ];
        for (parts, field) in refusals {
            let refused = app
                .converse_with(request("par", parts, tools.clone()))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument);
            assert_eq!(violated_fields(&refused), [field], "{shape:?}");
        }
        assert_eq!(app.all_turns("par").await.len(), 2);
        let done = app
            .converse_with(request(
                "par",
                vec![
                    tool_result("call_b", "09:00"),
                    tool_result("call_a", "sunny"),
                    text("thanks"),
                ],
                tools.clone(),
            ))
            .await
            .unwrap();
        assert_eq!(done.finish_reason, pb::FinishReason::Stop as i32);
        // A result of no pending call is refused once the calls are answered.
        let late = app
            .converse_with(request("par", vec![tool_result("call_a", "again")], tools))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&late), ["content[0].tool_result.call_id"]);
    }
}

#[tokio::test]
async fn trimming_keeps_a_call_and_its_result_together() {
    let fake = FakeUpstream::start("gpt").await;
    let app = spawn_app_with(|s| {
        serve(s, &fake, Shape::OpenAi);
        // Room for two history turns: the answer and the results, but not
        // the call they answer.
        model_m(s).max_history_turns = 2;
    })
    .await;
    let tools = with_tools(&["get_weather"]);
    fake.plan_replies([Planned::calls(&[("call_1", "get_weather", ARGS)])]);
    app.converse_with(request("trim", vec![text("Weather?")], tools.clone()))
        .await
        .unwrap();
    // Results go with the call they answer (and here its question).
    app.converse_with(request(
        "trim",
        vec![tool_result("call_1", "18C")],
        tools.clone(),
    ))
    .await
    .unwrap();
    let answering = forwarded(&fake.requests()[1]);
    assert_eq!(answering.len(), 3, "{answering:?}");
    assert_eq!(answering[1]["tool_calls"][0]["id"], "call_1");
    // Next turn: the answer fits, the results would, their call would not:
    // neither goes.
    app.converse_with(request("trim", vec![text("And tomorrow?")], tools.clone()))
        .await
        .unwrap();
    let next = forwarded(&fake.requests()[2]);
    let roles: Vec<&str> = next.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["assistant", "user"], "{next:?}");
    assert_eq!(next[0]["content"], "gpt: tool said 18C");
    for body in fake.requests() {
        let messages = forwarded(&body);
        for (i, m) in messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m["role"] == "tool")
        {
            let call_id = &m["tool_call_id"];
            let answered = messages[..i].iter().any(|a| {
                a["tool_calls"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| &c["id"] == call_id))
            });
            assert!(answered, "a tool result without its call: {messages:?}");
        }
    }
}

#[tokio::test]
async fn a_model_without_a_capability_is_refused_and_fallback_picks_one_that_has_it() {
    let plain = FakeUpstream::start("plain").await;
    let able = FakeUpstream::start("able").await;
    let app = spawn_app_with(|s| {
        crate::backends::with_model(
            s,
            vec![
                ("plain", crate::backends::openai(&plain, None)),
                ("able", crate::backends::openai(&able, None)),
            ],
            &[("plain", 1), ("able", 1)],
        );
        // Only the second target can take tools; a second model takes
        // neither tools nor logprobs.
        model_m(s).targets[0].capabilities = Some(vec![]);
        let mut text_only = model_m(s).clone();
        text_only.name = "text-only".into();
        text_only.targets.truncate(1);
        s.models.push(text_only);
    })
    .await;
    for i in 0..6 {
        let id = format!("cap-{i}");
        let reply = app
            .converse_with(request(&id, vec![text("hi")], with_tools(&["get_weather"])))
            .await
            .unwrap();
        assert_eq!(reply.metadata.unwrap().backend, "able");
    }
    assert_eq!(
        plain.request_count(),
        0,
        "the target without tools is never tried"
    );
    let models = app
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .models;
    let m = models.iter().find(|m| m.model_id == "m").unwrap();
    assert!(m.targets[0].capabilities.is_empty());
    assert_eq!(
        m.targets[1].capabilities,
        ["vision", "tools", "json_schema", "logprobs"]
    );

    let lacking = pb::GenerationConfig {
        model: Some("text-only".into()),
        logprobs: true,
        ..with_tools(&["get_weather"])
    };
    let refused = app
        .converse_with(request("cap-x", vec![text("hi")], lacking))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        error_reason(&refused).as_deref(),
        Some("MODEL_LACKS_CAPABILITY")
    );
    assert!(
        refused.message().contains("tools, logprobs"),
        "{}",
        refused.message()
    );
    let streamed = app
        .converse_stream(request(
            "cap-y",
            vec![image_url(
                "https://example.com/cat.png",
                pb::ImageDetail::Low,
            )],
            pb::GenerationConfig {
                model: Some("text-only".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        streamed.code(),
        Code::FailedPrecondition,
        "refused before the stream"
    );
    assert!(streamed.message().contains("vision"));
    // What history holds counts too: an image stored by an able model,
    // then a text turn sent to one without vision.
    let with_image = vec![
        text("look"),
        image_url("https://example.com/a.png", pb::ImageDetail::Low),
    ];
    app.converse_with(request("cap-h", with_image, Default::default()))
        .await
        .unwrap();
    let text_turn = pb::GenerationConfig {
        model: Some("text-only".into()),
        ..Default::default()
    };
    let refused = app
        .converse_with(request("cap-h", vec![text("and now?")], text_turn))
        .await
        .unwrap_err();
    assert_eq!(
        error_reason(&refused).as_deref(),
        Some("MODEL_LACKS_CAPABILITY")
    );
    assert!(refused.message().contains("vision"));
    assert_eq!(plain.request_count(), 0);
}

#[tokio::test]
async fn idempotency_keys_and_the_reply_cache_tell_tool_settings_apart() {
    let app = spawn_app().await;
    let ask = r#"call get_weather {"city": "Rome"}"#;
    let keyed = |generation: pb::GenerationConfig| pb::ConverseRequest {
        request_id: "req-tools".into(),
        ..request("idem", vec![text(ask)], generation)
    };
    let first = app
        .converse_with(keyed(with_tools(&["get_weather"])))
        .await
        .unwrap();
    assert_eq!(first.finish_reason, pb::FinishReason::ToolCalls as i32);
    let replayed = app
        .converse_with(keyed(with_tools(&["get_weather"])))
        .await
        .unwrap();
    assert!(replayed.metadata.unwrap().replayed);
    let other = app
        .converse_with(keyed(with_tools(&["get_weather", "get_time"])))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&other), ["request_id"]);

    // The cache answers the same request again, not one with other tools.
    let cached = |tools: &[&str]| pb::GenerationConfig {
        cache: pb::CachePolicy::Use as i32,
        ..with_tools(tools)
    };
    let mut answers = Vec::new();
    for (id, tools) in [
        ("c1", &["get_weather"][..]),
        ("c2", &["get_weather"]),
        ("c3", &["get_time"]),
    ] {
        let reply = app
            .converse_with(request(id, vec![text("hello")], cached(tools)))
            .await
            .unwrap();
        answers.push(reply.metadata.unwrap().cached);
    }
    assert_eq!(answers, [false, true, false]);
}
