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

    /// The same writes, each inserted value replaced by `f(index, key,
    /// value)`, or the first error.
    pub fn try_map_values<E>(
        self,
        mut f: impl FnMut(usize, &[u8], IVec) -> Result<IVec, E>,
    ) -> Result<WriteSet, E> {
        let ops = self
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, (key, value))| {
                let value = value.map(|v| f(i, &key, v)).transpose()?;
                Ok((key, value))
            })
            .collect::<Result<_, E>>()?;
        Ok(WriteSet { ops })
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
