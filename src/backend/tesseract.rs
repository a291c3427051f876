//! Tesseract OCR as an `ImageReader`: the `tesseract` executable (Debian's
//! `tesseract-ocr`) run once per image, the image on its stdin and the
//! text on its stdout, killed when it overruns its time.

use crate::dialogue::content::{Image, ImageSource};
use crate::dialogue::ports::{ImageReadError, ImageReader};
use async_trait::async_trait;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

pub struct Tesseract {
    command: String,
    languages: String,
    timeout: Duration,
}

impl Tesseract {
    pub fn new(command: &str, languages: &str, timeout: Duration) -> Tesseract {
        Tesseract {
            command: command.to_owned(),
            languages: languages.to_owned(),
            timeout,
        }
    }
}

#[async_trait]
impl ImageReader for Tesseract {
    fn name(&self) -> &str {
        "OCR (tesseract)"
    }

    async fn read(&self, image: &Image) -> Result<String, ImageReadError> {
        let ImageSource::Inline(inline) = &image.source else {
            return Err(ImageReadError::Unsupported(
                "is an image by URL; the OCR step reads inline images only".into(),
            ));
        };
        let failed = |what: String| ImageReadError::Failed(format!("{}: {what}", self.command));
        let mut child = tokio::process::Command::new(&self.command)
            .args(["stdin", "stdout", "-l", &self.languages])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("cannot start: {e}")))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| failed("no stdin".into()))?;
        let bytes = inline.data.clone();
        // Written beside the wait: a large image would fill the pipe while
        // tesseract waits to be read.
        let feed = tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
        });
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| failed(format!("took longer than {:?}", self.timeout)))?
            .map_err(|e| failed(e.to_string()))?;
        feed.abort();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(failed(format!("{}: {}", output.status, stderr.trim())));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}
