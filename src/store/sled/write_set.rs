//! The writes of one store change (an exchange, a dialogue's creation, an
//! erasure), kept in order so they can be logged, replayed and applied.

use sled::IVec;

/// Inserts and removals in the order they were asked for; a later write to
/// the same key wins, as in a `sled::Batch`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WriteSet {
    ops: Vec<(IVec, Option<IVec>)>,
}

impl WriteSet {
    pub fn insert<K: Into<IVec>, V: Into<IVec>>(&mut self, key: K, value: V) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn remove<K: Into<IVec>>(&mut self, key: K) {
        self.ops.push((key.into(), None));
    }

    /// The same writes, each inserted value replaced by `f(key, value)`.
    pub fn map_values(self, mut f: impl FnMut(&[u8], IVec) -> IVec) -> WriteSet {
        let ops = self
            .ops
            .into_iter()
            .map(|(key, value)| {
                let value = value.map(|v| f(&key, v));
                (key, value)
            })
            .collect();
        WriteSet { ops }
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn ops(&self) -> &[(IVec, Option<IVec>)] {
        &self.ops
    }

    /// Applies every write to `tree` one by one, without a sled batch: in
    /// sled 0.34 each batch writes the log buffer out twice (it "rolls" it
    /// before and after), which cost two disk writes per turn. Atomicity
    /// across a crash comes from the write-ahead log instead.
    pub fn apply(&self, tree: &sled::Tree) -> sled::Result<()> {
        for (key, value) in &self.ops {
            match value {
                Some(value) => tree.insert(key, value.clone())?,
                None => tree.remove(key)?,
            };
        }
        Ok(())
    }
}
