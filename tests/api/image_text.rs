//! Images for a model that cannot see: with `[image_text]`, an image of
//! rendered text is read by Tesseract (a real process; CI installs
//! Debian's `tesseract-ocr`) or by a model that can see, the text model
//! receives the text with a note of its origin and no image, and the
//! stored turn keeps both. Over gRPC and the OpenAI front; without the
//! step, the capability error stays.

use crate::backends::{openai, with_model};
use crate::helpers::*;
use crate::rich::{image_url, inline_image, model_m};
use crate::upstream::{FakeUpstream, Planned};
use dialogd::config::{ImageTextSettings, Settings};
use dialogd::pb::dialogue::v1 as pb;
use pb::content_part::Kind;
use std::path::Path;
use tonic::Code;

const INVOICE: &[u8] = include_bytes!("../fixtures/images/invoice.png");

/// Model `m` on `fake`, text only.
fn text_only(s: &mut Settings, fake: &FakeUpstream) {
    with_model(s, vec![("up", openai(fake, None))], &[("up", 1)]);
    model_m(s).targets[0].capabilities = Some(vec![]);
}

/// Tesseract through a wrapper that counts its runs in `runs`.
fn counted_tesseract(dir: &Path) -> ImageTextSettings {
    let script = dir.join("tesseract-counted");
    let runs = dir.join("runs");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho run >> '{}'\nexec tesseract \"$@\"\n",
            runs.display()
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&script, permissions).unwrap();
    ImageTextSettings::Tesseract {
        command: script.to_string_lossy().into_owned(),
        languages: "eng".into(),
        timeout_ms: 20_000,
    }
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The last upstream request as JSON text.
fn last_request(fake: &FakeUpstream) -> String {
    serde_json::to_string(fake.requests().last().expect("a model call")).unwrap()
}

fn turn_with_image(id: &str) -> pb::ConverseRequest {
    crate::rich::request(
        id,
        vec![
            text("What is the total?"),
            inline_image("image/png", INVOICE),
        ],
        pb::GenerationConfig::default(),
    )
}

#[tokio::test]
async fn an_image_is_read_by_ocr_for_a_text_model_and_stored_with_its_text() {
    let fake = FakeUpstream::start("text").await;
    let dir = tempfile::TempDir::new().unwrap();
    let reader = counted_tesseract(dir.path());
    let app = spawn_app_with(|s| {
        text_only(s, &fake);
        s.image_text = Some(reader);
    })
    .await;
    app.converse_with(turn_with_image("ocr")).await.unwrap();
    let sent = last_request(&fake);
    assert!(sent.contains("INVOICE 4711 TOTAL 99 EUR"), "{sent}");
    assert!(
        sent.contains("[Text of image 1, read by OCR (tesseract)]"),
        "{sent}"
    );
    assert!(
        !sent.contains("image_url"),
        "the text model got an image: {sent}"
    );
    assert_eq!(runs(dir.path()), 1);

    // Stored: the question, the image, then its text.
    let stored = app
        .list_turns(pb::ListTurnsRequest {
            parent: name("ocr"),
            page_size: 10,
            view: pb::TurnView::Full as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .turns;
    let kinds: Vec<&str> = stored[0]
        .content
        .iter()
        .map(|p| match &p.kind {
            Some(Kind::Text(_)) => "text",
            Some(Kind::Image(_)) => "image",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["text", "image", "text"]);
    assert!(turn_text(&stored[0]).contains("INVOICE 4711"));

    // The next turn's prompt carries the stored text: no second reading.
    let mut next = converse_request("ocr", "And the invoice number?");
    next.generation = Some(pb::GenerationConfig::default());
    app.converse_with(next).await.unwrap();
    let sent = last_request(&fake);
    assert!(
        sent.contains("INVOICE 4711") && !sent.contains("image_url"),
        "{sent}"
    );
    assert_eq!(runs(dir.path()), 1);

    // OCR reads inline images only: one by URL is refused, naming it.
    let refused = app
        .converse_with(crate::rich::request(
            "ocr-url",
            vec![
                text("and this?"),
                image_url("https://example.com/a.png", pb::ImageDetail::Unspecified),
            ],
            pb::GenerationConfig::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .starts_with("content[1] is an image by URL"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_openai_front_sends_the_text_of_an_image_to_a_text_model() {
    let fake = FakeUpstream::start("text").await;
    let dir = tempfile::TempDir::new().unwrap();
    let reader = counted_tesseract(dir.path());
    let app = spawn_app_with(|s| {
        text_only(s, &fake);
        s.image_text = Some(reader);
    })
    .await;
    let data_url = format!(
        "data:image/png;base64,{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, INVOICE)
    );
    let response = plain_http()
        .build()
        .unwrap()
        .post(format!("http://{}/v1/chat/completions", app.addr))
        .json(
            &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Total?"},
                {"type": "image_url", "image_url": {"url": data_url}},
            ]}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let sent = last_request(&fake);
    assert!(
        sent.contains("INVOICE 4711 TOTAL 99 EUR") && !sent.contains("image_url"),
        "{sent}"
    );
}

#[tokio::test]
async fn a_vision_model_can_read_images_for_a_text_model() {
    let text_fake = FakeUpstream::start("text").await;
    let eye = FakeUpstream::start("eye").await;
    eye.plan_replies([Planned::text("An invoice: number 4711, total 99 EUR.")]);
    let app = spawn_app_with(|s| {
        text_only(s, &text_fake);
        s.backends.insert("eye".into(), openai(&eye, None));
        s.models.push(dialogd::config::ModelSettings {
            name: "eye".into(),
            backend: Some("eye".into()),
            ..s.models[0].clone()
        });
        s.image_text = Some(ImageTextSettings::Model {
            model: "eye".into(),
            instruction: "Transcribe this.".into(),
        });
    })
    .await;
    app.converse_with(turn_with_image("seen")).await.unwrap();
    let asked = last_request(&eye);
    assert!(
        asked.contains("Transcribe this.") && asked.contains("image_url"),
        "{asked}"
    );
    let sent = last_request(&text_fake);
    assert!(
        sent.contains("[Text of image 1, read by model eye]")
            && sent.contains("An invoice: number 4711")
            && !sent.contains("image_url"),
        "{sent}"
    );
}

#[tokio::test]
async fn without_the_step_a_text_model_still_refuses_images() {
    let fake = FakeUpstream::start("text").await;
    let app = spawn_app_with(|s| text_only(s, &fake)).await;
    let refused = app
        .converse_with(turn_with_image("no-step"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        error_reason(&refused).as_deref(),
        Some("MODEL_LACKS_CAPABILITY")
    );
    assert_eq!(fake.request_count(), 0);
}
