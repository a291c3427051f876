//! Reading a dialogue's history when it may be a branch: its own turns
//! come from its own records, the ones it borrows from its parent's (and
//! theirs, up the line). See `branches` for how branches come and go.

use crate::dialogue::model::{Dialogue, ForkOrigin, Turn};
use crate::dialogue::ports::{DialogueStore, StoreError};
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Clone, Copy)]
pub struct History<'a>(pub &'a dyn DialogueStore);

impl History<'_> {
    /// The dialogue `origin` borrows from; a missing one is damage.
    pub async fn ancestor(&self, origin: &ForkOrigin) -> Result<Dialogue, StoreError> {
        self.0.get_dialogue(&origin.parent).await?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{}, whose turns a branch borrows, is missing",
                origin.parent.resource_name()
            ))
        })
    }

    /// `dialogue`'s turns before index `before`, newest first, at most
    /// `limit`: its own, then those it borrows.
    pub async fn before(
        &self,
        dialogue: &Dialogue,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Turn>>, StoreError> {
        let mut out = Vec::new();
        let mut holder = Cow::Borrowed(dialogue);
        let mut before = before.min(dialogue.turn_count);
        while out.len() < limit && before > 0 {
            let base = holder.fork.as_ref().map_or(0, |f| f.turns);
            if before > base {
                let read = self
                    .0
                    .turns_before(&holder.id, before, limit - out.len())
                    .await?;
                let full = read.len() == limit - out.len();
                out.extend(read.into_iter().filter(|t| t.index >= base));
                if full {
                    break;
                }
            }
            let Some(origin) = &holder.fork else { break };
            before = before.min(origin.turns);
            holder = Cow::Owned(self.ancestor(origin).await?);
        }
        Ok(out)
    }

    /// `dialogue`'s turns from index `from` on, oldest first, at most
    /// `limit`: those it borrows, then its own.
    pub async fn from(
        &self,
        dialogue: &Dialogue,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        let mut out: Vec<Turn> = Vec::new();
        let mut from = from;
        while out.len() < limit && from < dialogue.turn_count {
            // The dialogue whose own turns hold index `from`, and where
            // the turns it lends this line end.
            let mut holder = Cow::Borrowed(dialogue);
            let mut end = dialogue.turn_count;
            while let Some(origin) = holder.fork.as_ref().filter(|f| from < f.turns) {
                end = origin.turns;
                holder = Cow::Owned(self.ancestor(origin).await?);
            }
            let want = (limit - out.len()).min(usize::try_from(end - from).unwrap_or(usize::MAX));
            let read = self.0.list_turns(&holder.id, from, want).await?;
            let Some(last) = read.last() else { break };
            from = last.index + 1;
            out.extend(read);
        }
        Ok(out)
    }
}
