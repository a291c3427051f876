//! Images for models that cannot see: with `[image_text]` configured, a
//! request carrying images to a model without `vision` has each image read
//! as text first (OCR, or a model that can see). The caller's new message
//! is stored with the image and, after it, the text with a note of its
//! origin; the prompt carries the text in the image's place. Images of
//! earlier turns without such a text are read when a prompt needs them.

use super::{Engine, EngineError};
use crate::backend::ModelRequest;
use crate::config::Capability;
use crate::dialogue::content::Image;
use crate::dialogue::model::{ContentPart, GenerationParams, PromptMessage, Role};
use crate::dialogue::ports::{ImageReadError, ImageReader};
use crate::router::{ModelRoute, Router};
use async_trait::async_trait;
use std::sync::Arc;

/// How the text read from an image starts: `[Text of image 1, read by
/// OCR (tesseract)]`, then the text on the next line.
pub const IMAGE_TEXT_NOTE: &str = "[Text of image ";

/// A model that can see, as an `ImageReader`.
pub struct ModelReader {
    router: Arc<Router>,
    model: String,
    instruction: String,
    name: String,
}

impl ModelReader {
    pub fn new(router: Arc<Router>, model: &str, instruction: &str) -> ModelReader {
        ModelReader {
            router,
            model: model.to_owned(),
            instruction: instruction.to_owned(),
            name: format!("model {model}"),
        }
    }
}

#[async_trait]
impl ImageReader for ModelReader {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read(&self, image: &Image) -> Result<String, ImageReadError> {
        let route = self
            .router
            .route(&self.model)
            .ok_or_else(|| ImageReadError::Failed(format!("model {} is not served", self.model)))?;
        let request = ModelRequest {
            messages: vec![PromptMessage {
                role: Role::User,
                content: vec![
                    ContentPart::Text(self.instruction.clone()),
                    ContentPart::Image(image.clone()),
                ]
                .into(),
            }],
            params: GenerationParams::default(),
        };
        let routed = self
            .router
            .complete(route, &request, None)
            .await
            .map_err(|e| ImageReadError::Failed(e.to_string()))?;
        Ok(routed.value.text)
    }
}

impl Engine {
    /// The image reader, when `route` cannot see and one is configured.
    fn reader_for(&self, route: &ModelRoute) -> Option<&Arc<dyn ImageReader>> {
        let reader = self.image_reader.as_ref()?;
        let needs = [Capability::Vision].into();
        route.lacks(&needs).is_some().then_some(reader)
    }

    /// The caller's new message with the text of each image after it, when
    /// the routed model cannot see.
    pub(super) async fn add_image_text(
        &self,
        route: &ModelRoute,
        content: &mut Vec<ContentPart>,
    ) -> Result<(), EngineError> {
        let Some(reader) = self.reader_for(route) else {
            return Ok(());
        };
        if !content.iter().any(|p| matches!(p, ContentPart::Image(_))) {
            return Ok(());
        }
        let mut with_text = Vec::with_capacity(content.len() * 2);
        let mut images = 0;
        for (i, part) in std::mem::take(content).into_iter().enumerate() {
            let text = match &part {
                ContentPart::Image(image) => {
                    images += 1;
                    let field = format!("content[{i}]");
                    Some(read(reader.as_ref(), image, &field, images).await?)
                }
                _ => None,
            };
            with_text.push(part);
            with_text.extend(text.map(ContentPart::Text));
        }
        *content = with_text;
        Ok(())
    }

    /// A prompt for a model that cannot see: each image gives way to its
    /// text (read now when its turn holds none).
    pub(super) async fn images_to_text(
        &self,
        route: &ModelRoute,
        messages: &mut [PromptMessage],
    ) -> Result<(), EngineError> {
        let Some(reader) = self.reader_for(route) else {
            return Ok(());
        };
        for (m, message) in messages.iter_mut().enumerate() {
            if !message
                .content
                .iter()
                .any(|p| matches!(p, ContentPart::Image(_)))
            {
                continue;
            }
            let content = message.content.to_mut();
            let mut parts = std::mem::take(content).into_iter().enumerate().peekable();
            let mut images = 0;
            while let Some((i, part)) = parts.next() {
                let ContentPart::Image(image) = part else {
                    content.push(part);
                    continue;
                };
                images += 1;
                let has_text = matches!(
                    parts.peek(),
                    Some((_, ContentPart::Text(t))) if t.starts_with(IMAGE_TEXT_NOTE)
                );
                if !has_text {
                    let field = format!("messages[{m}].content[{i}]");
                    let text = read(reader.as_ref(), &image, &field, images).await?;
                    content.push(ContentPart::Text(text));
                }
            }
        }
        Ok(())
    }
}

/// The text of the `n`th image of a message, with the note of its origin.
async fn read(
    reader: &dyn ImageReader,
    image: &Image,
    field: &str,
    n: usize,
) -> Result<String, EngineError> {
    match reader.read(image).await {
        Ok(text) => {
            let text = match text.trim() {
                "" => "(no text found)",
                text => text,
            };
            Ok(format!(
                "{IMAGE_TEXT_NOTE}{n}, read by {}]\n{text}",
                reader.name()
            ))
        }
        Err(ImageReadError::Unsupported(why)) => Err(EngineError::FailedPrecondition {
            reason: "IMAGE_TEXT_UNSUPPORTED",
            message: format!("{field} {why}"),
        }),
        Err(ImageReadError::Failed(detail)) => {
            tracing::error!(reader = reader.name(), error = %detail, "reading an image as text failed");
            Err(EngineError::FailedPrecondition {
                reason: "IMAGE_TEXT_FAILED",
                message: format!(
                    "the image at {field} could not be turned into text for a model without vision"
                ),
            })
        }
    }
}
