//! One message of a prompt. A message taken from stored history shares the
//! turn's parts (the recent-turns cache holds turns behind `Arc`), so a
//! prompt of a long dialogue is built without a second copy of its history:
//! what it costs is proportional to what is sent upstream, not to copying.

use super::content::{ContentPart, join_text};
use super::model::{Role, Turn};
use std::ops::Deref;
use std::sync::Arc;

/// One message of the prompt sent to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptMessage {
    pub role: Role,
    pub content: MessageContent,
}

impl PromptMessage {
    /// A message of text alone.
    pub fn text(role: Role, text: impl Into<String>) -> PromptMessage {
        PromptMessage {
            role,
            content: vec![ContentPart::Text(text.into())].into(),
        }
    }

    /// A stored turn as a message, sharing its parts.
    pub fn of_turn(turn: &Arc<Turn>) -> PromptMessage {
        PromptMessage {
            role: turn.role,
            content: MessageContent::Stored(Arc::clone(turn)),
        }
    }

    /// Its text parts joined.
    pub fn joined_text(&self) -> String {
        join_text(&self.content)
    }
}

/// A message's parts: its own, or a stored turn's (shared, read-only).
#[derive(Debug, Clone)]
pub enum MessageContent {
    Own(Vec<ContentPart>),
    Stored(Arc<Turn>),
}

impl MessageContent {
    /// The parts to change: a stored turn's are copied first (unless no
    /// one else holds the turn).
    pub fn to_mut(&mut self) -> &mut Vec<ContentPart> {
        if let MessageContent::Stored(_) = self {
            *self = MessageContent::Own(std::mem::take(self).into_vec());
        }
        match self {
            MessageContent::Own(parts) => parts,
            // ok: made `Own` just above; nothing a caller sends reaches this.
            MessageContent::Stored(_) => unreachable!("replaced above"),
        }
    }

    /// The parts, owned (a stored turn's are copied unless no one else
    /// holds the turn).
    pub fn into_vec(self) -> Vec<ContentPart> {
        match self {
            MessageContent::Own(parts) => parts,
            MessageContent::Stored(turn) => {
                Arc::try_unwrap(turn).map_or_else(|shared| shared.content.clone(), |t| t.content)
            }
        }
    }
}

impl Deref for MessageContent {
    type Target = [ContentPart];

    fn deref(&self) -> &[ContentPart] {
        match self {
            MessageContent::Own(parts) => parts,
            MessageContent::Stored(turn) => &turn.content,
        }
    }
}

impl From<Vec<ContentPart>> for MessageContent {
    fn from(parts: Vec<ContentPart>) -> Self {
        MessageContent::Own(parts)
    }
}

impl Default for MessageContent {
    fn default() -> Self {
        MessageContent::Own(Vec::new())
    }
}

impl<'a> IntoIterator for &'a MessageContent {
    type Item = &'a ContentPart;
    type IntoIter = std::slice::Iter<'a, ContentPart>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Serialized as the list of parts, whoever holds them.
impl serde::Serialize for MessageContent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl PartialEq for MessageContent {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(text: &str) -> Arc<Turn> {
        Arc::new(Turn::of_text(0, Role::User, text))
    }

    #[test]
    fn a_stored_turn_is_shared_not_copied() {
        let stored = turn("hello");
        let message = PromptMessage::of_turn(&stored);
        let MessageContent::Stored(shared) = &message.content else {
            panic!("the turn was copied");
        };
        assert!(Arc::ptr_eq(shared, &stored));
        assert_eq!(message.joined_text(), "hello");
        assert_eq!(
            message.content,
            MessageContent::from(stored.content.clone())
        );
    }

    #[test]
    fn changing_a_stored_message_leaves_the_turn_alone() {
        let stored = turn("hello");
        let mut message = PromptMessage::of_turn(&stored);
        message
            .content
            .to_mut()
            .push(ContentPart::Text(" world".into()));
        assert_eq!(message.joined_text(), "hello world");
        assert_eq!(stored.text(), "hello");
        assert_eq!(message.content.into_vec().len(), 2);
    }
}
