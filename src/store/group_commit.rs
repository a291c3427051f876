//! Group commit: one flush to disk serves every write that finished before
//! the flush started, so durability costs one fsync per batch, not per write.
//!
//! A dedicated thread runs the (blocking) flush, so the async runtime never
//! waits on disk, and only one flush runs at a time. sled's own
//! `flush_async` is not used: in 0.34.7 it deadlocks under concurrent callers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use tokio::sync::watch;

pub type FlushFn = Box<dyn FnMut() -> Result<(), String> + Send>;

#[derive(Debug, Clone, Default)]
struct Flushed {
    /// Every write whose ticket is <= this was covered by the last flush.
    up_to: u64,
    /// The last flush's failure, if it failed.
    error: Option<Arc<str>>,
}

pub struct GroupCommit {
    /// Tickets handed to finished writes that wait for durability.
    issued: Arc<AtomicU64>,
    /// Wakes the flusher; capacity 1, since one pending wake-up is enough.
    /// Taken on drop to stop the thread.
    wake: Option<mpsc::SyncSender<()>>,
    flushed: watch::Receiver<Flushed>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the flusher thread; it stops when the `GroupCommit` is dropped.
    pub fn start(mut flush: FlushFn) -> std::io::Result<GroupCommit> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let (report, flushed) = watch::channel(Flushed::default());
        let issued = Arc::new(AtomicU64::new(0));
        let tickets = issued.clone();
        let thread = std::thread::Builder::new()
            .name("dialogd-flusher".into())
            .spawn(move || {
                let mut up_to = 0;
                while woken.recv().is_ok() {
                    // Read the tickets only after waking: every write that
                    // took a ticket by now finished before this flush starts.
                    let target = tickets.load(Ordering::Acquire);
                    if target <= up_to {
                        continue;
                    }
                    let error = flush().err().map(Arc::from);
                    if let Some(e) = &error {
                        tracing::error!(error = %e, "store flush failed");
                    }
                    up_to = target;
                    report.send_replace(Flushed { up_to, error });
                }
            })?;
        Ok(GroupCommit {
            issued,
            wake: Some(wake),
            flushed,
            thread: Some(thread),
        })
    }

    /// Returns once every write that finished before this call is on disk.
    pub async fn wait_durable(&self) -> Result<(), String> {
        let ticket = self.issued.fetch_add(1, Ordering::AcqRel) + 1;
        // Full means a wake-up is already pending; it will see our ticket.
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
        let mut flushed = self.flushed.clone();
        let state = flushed
            .wait_for(|f| f.up_to >= ticket)
            .await
            .map_err(|_| "the store flusher stopped".to_string())?;
        // A later successful flush covers earlier writes too, so only the
        // latest result matters.
        match &state.error {
            None => Ok(()),
            Some(e) => Err(e.to_string()),
        }
    }
}

impl Drop for GroupCommit {
    /// Stops and joins the flusher, so whatever its flush closure holds
    /// (the database, and with it the data dir's lock) is released when
    /// the store is dropped, not some time later.
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let counter = flushes.clone();
        let gc = Arc::new(
            GroupCommit::start(Box::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                Ok(())
            }))
            .unwrap(),
        );
        let waiters: Vec<_> = (0..64)
            .map(|_| {
                let gc = gc.clone();
                tokio::spawn(async move { gc.wait_durable().await })
            })
            .collect();
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        let n = flushes.load(Ordering::SeqCst);
        assert!((1..=8).contains(&n), "64 writers took {n} flushes");
    }

    #[tokio::test]
    async fn every_waiter_gets_a_flush_that_started_after_it() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let counter = flushes.clone();
        let gc = GroupCommit::start(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }))
        .unwrap();
        for expected in 1..=3 {
            gc.wait_durable().await.unwrap();
            assert_eq!(flushes.load(Ordering::SeqCst), expected);
        }
    }

    #[tokio::test]
    async fn a_failed_flush_fails_its_waiters() {
        let gc = GroupCommit::start(Box::new(|| Err("disk full".to_string()))).unwrap();
        assert_eq!(gc.wait_durable().await.unwrap_err(), "disk full");
    }
}
