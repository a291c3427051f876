//! `[operations]`: how asynchronous turns (SubmitTurn) are run.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OperationSettings {
    /// Asynchronous turns running at once; the others wait in priority
    /// order (1–1024).
    pub workers: usize,
    /// Waiting this long raises a turn one priority level (low → normal →
    /// high), so low priority never starves (1–86400).
    pub aging_secs: u64,
}

impl Default for OperationSettings {
    fn default() -> Self {
        OperationSettings {
            workers: 16,
            aging_secs: 60,
        }
    }
}

impl OperationSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(1..=1024).contains(&self.workers) {
            return Err(format!(
                "operations.workers must be 1 to 1024, not {}",
                self.workers
            ));
        }
        if !(1..=86_400).contains(&self.aging_secs) {
            return Err(format!(
                "operations.aging_secs must be 1 to 86400, not {}",
                self.aging_secs
            ));
        }
        Ok(())
    }
}
