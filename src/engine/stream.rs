//! Turns answered as a stream of events: ConverseStream (optionally
//! resumable) and streamed stateless completions. Each runs as a task in
//! one of the caller's stream slots and stops as soon as its client goes
//! (nothing is stored then), its deadline passes or the drain time ends.

use super::commit::Served;
use super::plan::{Plan, PlannedTurn};
use super::relay::{EventSender, Relay};
use super::{Engine, EngineError, Events, quota_key};
use crate::auth::Principal;
use crate::backend::{BackendError, ModelReply, ReplyChunk, ReplyStream};
use crate::dialogue::model::{CompletionRequest, FinishReason, Owner, StreamEvent, TurnRequest};
use futures_util::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

impl Engine {
    /// Runs one turn as a stream of events. The turn runs in its own task
    /// and stops as soon as the receiver is dropped (client gone): nothing
    /// is stored then, and the dialogue's lock is released. A resumable
    /// turn goes on without its client and can be re-attached to.
    pub fn converse_stream(self: &Arc<Self>, mut request: TurnRequest) -> Events {
        request.dialogue_id = request.dialogue_id.scoped_to(&Owner::of(&request.caller));
        let (caller, deadline) = (request.caller.clone(), request.deadline);
        let resumable = request.resumable;
        let turn = self.spawn_stream(&caller, deadline, async move |engine, tx| {
            match engine.prepare_turn(&request).await? {
                (Plan::Replay(outcome), _guard) => {
                    for event in super::replay::replay_events(*outcome) {
                        if tx.send(Ok(event)).await.is_err() {
                            break;
                        }
                    }
                    Ok(())
                }
                (Plan::Run(planned), _guard) => engine.execute_stream(planned, &tx).await,
            }
        });
        if !resumable {
            return turn;
        }
        // The recorder drains the turn whatever the client does, so the
        // turn never sees its client go.
        let (client, rx) = mpsc::channel(32);
        self.tasks.spawn(self.live.clone().record(turn, client));
        rx
    }

    /// `complete`, streamed like a turn.
    pub fn complete_stream(self: &Arc<Self>, request: CompletionRequest) -> Events {
        let (caller, deadline) = (request.caller.clone(), request.deadline);
        self.spawn_stream(&caller, deadline, async move |engine, tx| {
            let planned = Box::new(engine.plan_completion(request).await?);
            engine.execute_stream(planned, &tx).await
        })
    }

    /// Runs `run` as a streaming turn's task: in one of the caller's stream
    /// slots, until the client goes (nothing stored), the deadline passes
    /// or the drain time ends.
    fn spawn_stream<F, Fut>(
        self: &Arc<Self>,
        caller: &Principal,
        deadline: Option<Instant>,
        run: F,
    ) -> Events
    where
        F: FnOnce(Arc<Engine>, EventSender) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), EngineError>> + Send,
    {
        let (tx, rx) = mpsc::channel(32);
        let engine = self.clone();
        let span = tracing::Span::current();
        let quota_key = quota_key(caller);
        // The turn reports to its call's timing from its own task. Boxed:
        // the task below holds it in two places (with and without a
        // timing), which unboxed doubled every stream's task (scenario
        // (g): +40 MiB with 1,000 streams).
        let timing = crate::meter::CallTiming::current();
        let turn = Box::pin(async move {
            let Some(_slot) = engine.streams.try_open(&quota_key).await else {
                crate::meter::rate_limited("streams");
                let _ = tx.send(Err(engine.stream_limit())).await;
                return;
            };
            let _in_flight = crate::meter::stream_started();
            let running = run(engine.clone(), tx.clone());
            tokio::select! {
                _ = tx.closed() => {
                    tracing::debug!("stream abandoned by the client; nothing stored");
                }
                result = engine.guarded(deadline, running) => {
                    if let Err(e) = result {
                        let _ = tx.send(Err(e)).await;
                    }
                }
            }
        });
        self.tasks.spawn(tracing::Instrument::instrument(
            async move {
                match timing {
                    Some(timing) => timing.scope(turn).await,
                    None => turn.await,
                }
            },
            span,
        ));
        rx
    }

    fn stream_limit(&self) -> EngineError {
        EngineError::RateLimited {
            reason: "STREAM_LIMIT",
            message: format!(
                "this caller already has {} streams open",
                self.limits.max_streams_per_principal
            ),
            retry_after: Duration::from_secs(1),
        }
    }

    /// Streams the reply to a planned turn (the cache's or the model's)
    /// and commits it.
    async fn execute_stream(
        &self,
        planned: Box<PlannedTurn>,
        tx: &EventSender,
    ) -> Result<(), EngineError> {
        let (chunks, mut served) = self.reply_stream_to(&planned).await?;
        let start = StreamEvent::Start {
            dialogue_id: planned.dialogue_id.clone(),
            turn_index: planned.user_turn.index + 1,
            model: planned.route.name.clone(),
        };
        if tx.send(Ok(start)).await.is_err() {
            return Ok(());
        }
        let Some(reply) = self.relay(chunks, tx, &mut served).await? else {
            return Ok(());
        };
        let outcome = self.commit(planned, reply, served).await?;
        let _ = tx.send(Ok(StreamEvent::End(Box::new(outcome)))).await;
        Ok(())
    }

    /// Relays `chunks` to the client (see `relay.rs`) and returns the
    /// whole reply; `None` once the client is gone. A blocked term ends the
    /// reply (dropping `chunks` cancels the call). Time spent waiting on
    /// the model or the client is added to `served.waited`.
    async fn relay(
        &self,
        mut chunks: ReplyStream,
        tx: &EventSender,
        served: &mut Served,
    ) -> Result<Option<ModelReply>, EngineError> {
        let mut relay = Relay::new(tx, self.output_filter());
        let mut finished = None;
        loop {
            let wait_started = Instant::now();
            let next = chunks.next().await;
            served.waited += wait_started.elapsed();
            let Some(chunk) = next.transpose()? else {
                break;
            };
            let wait_started = Instant::now();
            let client_open = match chunk {
                ReplyChunk::Text(piece) => relay.text(piece).await,
                ReplyChunk::Logprobs(logprobs) => {
                    relay.logprobs(logprobs);
                    true
                }
                ReplyChunk::ToolCall(piece) => relay.tool_call(piece).await,
                ReplyChunk::Finished {
                    finish_reason,
                    usage,
                    model,
                } => {
                    finished = Some((finish_reason, usage, model));
                    break;
                }
            };
            served.waited += wait_started.elapsed();
            if !client_open {
                return Ok(None);
            }
            if relay.is_blocked() {
                finished = Some((FinishReason::ContentFilter, None, None));
                break;
            }
        }
        drop(chunks);
        let Some((finish_reason, usage, model)) = finished else {
            return Err(BackendError::InvalidReply {
                backend: served.backend.clone(),
                detail: "the stream ended without a finish reason".into(),
            }
            .into());
        };
        let wait_started = Instant::now();
        let reply = relay.finish(finish_reason).await;
        served.waited += wait_started.elapsed();
        Ok(reply.map(|reply| ModelReply {
            usage,
            model,
            ..reply
        }))
    }
}
