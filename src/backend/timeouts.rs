//! Time limits on a streamed reply, shared by every HTTP backend: the first
//! chunk must arrive by a deadline, and later chunks may not be further
//! apart than the idle limit. A live but stalled upstream thus ends with a
//! `Timeout` instead of hanging the turn.

use super::{BackendError, ReplyStream};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::time::Instant;

pub fn with_stream_timeouts(
    inner: ReplyStream,
    backend: &str,
    first_chunk_by: Instant,
    idle: Duration,
) -> ReplyStream {
    struct State {
        inner: ReplyStream,
        backend: String,
        next_by: Instant,
        idle: Duration,
        first: bool,
        done: bool,
    }
    let state = State {
        inner,
        backend: backend.to_owned(),
        next_by: first_chunk_by,
        idle,
        first: true,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        match tokio::time::timeout_at(s.next_by, s.inner.next()).await {
            Ok(Some(item)) => {
                s.done = item.is_err();
                s.first = false;
                s.next_by = Instant::now() + s.idle;
                Some((item, s))
            }
            Ok(None) => None,
            Err(_) => {
                s.done = true;
                let phase = if s.first {
                    "the first token"
                } else {
                    "the next token (stream stalled)"
                };
                let error = BackendError::Timeout {
                    backend: s.backend.clone(),
                    phase,
                };
                Some((Err(error), s))
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ReplyChunk;

    fn slow(delays_ms: Vec<u64>) -> ReplyStream {
        Box::pin(futures_util::stream::iter(delays_ms).then(|ms| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ReplyChunk::Text("x".into()))
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_first_chunk_is_a_timeout() {
        let s = with_stream_timeouts(
            slow(vec![500]),
            "b",
            Instant::now() + Duration::from_millis(100),
            Duration::from_secs(9),
        );
        let items: Vec<_> = s.collect().await;
        assert!(matches!(
            items.as_slice(),
            [Err(BackendError::Timeout {
                phase: "the first token",
                ..
            })]
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_after_tokens_is_a_timeout_and_ends_the_stream() {
        let s = with_stream_timeouts(
            slow(vec![10, 10, 500, 10]),
            "b",
            Instant::now() + Duration::from_secs(1),
            Duration::from_millis(100),
        );
        let items: Vec<_> = s.collect().await;
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        assert!(matches!(items[2], Err(BackendError::Timeout { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn steady_chunks_pass_untouched() {
        let s = with_stream_timeouts(
            slow(vec![50; 5]),
            "b",
            Instant::now() + Duration::from_millis(60),
            Duration::from_millis(60),
        );
        assert_eq!(s.filter(|i| std::future::ready(i.is_ok())).count().await, 5);
    }
}
