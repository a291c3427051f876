//! `[image_text]`: turning images into text for models that cannot see —
//! a local OCR engine (Tesseract, run as a process) or a vision model.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ImageTextSettings {
    /// Tesseract OCR (Debian's `tesseract-ocr`), reading inline images.
    Tesseract {
        /// The executable.
        #[serde(default = "default_command")]
        command: String,
        /// Tesseract's `-l`: trained languages joined by `+`.
        #[serde(default = "default_languages")]
        languages: String,
        /// Longest run per image.
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
    },
    /// A public model with `vision`, asked to transcribe and describe.
    Model {
        model: String,
        #[serde(default = "default_instruction")]
        instruction: String,
    },
}

fn default_command() -> String {
    "tesseract".into()
}

fn default_languages() -> String {
    "eng".into()
}

fn default_timeout_ms() -> u64 {
    20_000
}

fn default_instruction() -> String {
    "Transcribe all text in this image exactly, then describe briefly what else it shows. \
     Answer with the transcription and description only."
        .into()
}

impl ImageTextSettings {
    pub(super) fn validate(&self, models: &[&str]) -> Result<(), String> {
        match self {
            ImageTextSettings::Tesseract {
                command,
                languages,
                timeout_ms,
            } => {
                if command.trim().is_empty() {
                    return Err("image_text.command is empty".into());
                }
                let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '+';
                if languages.is_empty() || !languages.chars().all(ok) {
                    return Err(format!(
                        "image_text.languages {languages:?} is not like \"eng\" or \"eng+deu\""
                    ));
                }
                if !(100..=600_000).contains(timeout_ms) {
                    return Err("image_text.timeout_ms must be 100 to 600000".into());
                }
            }
            ImageTextSettings::Model { model, instruction } => {
                if !models.contains(&model.as_str()) {
                    return Err(format!(
                        "image_text.model: unknown model {model:?} (known: {})",
                        models.join(", ")
                    ));
                }
                if instruction.trim().is_empty() {
                    return Err("image_text.instruction is empty".into());
                }
            }
        }
        Ok(())
    }
}
