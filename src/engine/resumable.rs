//! Resumable streams. A turn streamed with `resumable` keeps generating when
//! its client goes (and is stored when it completes); its owner re-attaches
//! by the turn's index and the byte offset it had received, gets what it
//! missed, then the rest live. Live turns are kept here while they run and
//! for `RETAIN` after they end; a finished turn is also replayed from the
//! store (see `Engine::resume_stream`).

use super::error::EngineError;
use crate::dialogue::model::{DialogueId, StreamEvent};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// How long a finished live turn stays here for clients re-attaching.
const RETAIN: Duration = Duration::from_secs(300);
/// Events a re-attached client may fall behind by before it must resume
/// again from its offset.
const LAG: usize = 1024;

pub type Event = Result<StreamEvent, EngineError>;

#[derive(Default)]
pub struct LiveTurns {
    turns: Mutex<HashMap<(DialogueId, u64), Arc<LiveTurn>>>,
}

struct LiveTurn {
    state: Mutex<LiveState>,
    /// Every event after the start; sent under the state's lock, so a
    /// snapshot plus a subscription taken together miss nothing.
    events: broadcast::Sender<Event>,
}

struct LiveState {
    start: StreamEvent,
    text: String,
    /// The tool-call pieces so far.
    calls: Vec<StreamEvent>,
    /// The last event (end or error) once the turn is over, and when.
    end: Option<(Event, Instant)>,
}

/// What a re-attaching client gets: the start, the text and tool-call
/// pieces so far, the end if the turn is over, else a subscription to what
/// follows.
pub struct Attached {
    pub start: StreamEvent,
    pub text: String,
    pub calls: Vec<StreamEvent>,
    pub end: Option<Event>,
    pub rest: broadcast::Receiver<Event>,
}

impl Attached {
    /// Sends the start, `missed` (the text from byte `offset` on), the
    /// tool-call pieces so far, then what follows until the end, to `tx`.
    pub async fn forward(mut self, missed: String, offset: u64, tx: mpsc::Sender<Event>) {
        let mut first = vec![Ok(self.start)];
        if !missed.is_empty() {
            first.push(Ok(StreamEvent::Delta {
                text: missed,
                offset,
                logprobs: Vec::new(),
            }));
        }
        first.extend(self.calls.into_iter().map(Ok));
        let over = self.end.is_some();
        first.extend(self.end);
        for event in first {
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if over {
            return;
        }
        loop {
            let event = match self.rest.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => Err(EngineError::Aborted(
                    "this stream fell behind the turn; resume from the offset received".into(),
                )),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let last = matches!(event, Ok(StreamEvent::End(_)) | Err(_));
            if tx.send(event).await.is_err() || last {
                return;
            }
        }
    }
}

impl LiveTurns {
    /// Forwards a turn's events to its client while it listens, and records
    /// them for clients re-attaching; keeps draining after the client goes
    /// so the turn runs to its end.
    pub async fn record(
        self: Arc<Self>,
        mut turn: mpsc::Receiver<Event>,
        client: mpsc::Sender<Event>,
    ) {
        let mut live: Option<Arc<LiveTurn>> = None;
        let mut client = Some(client);
        while let Some(event) = turn.recv().await {
            match (&event, &live) {
                (
                    Ok(
                        start @ StreamEvent::Start {
                            dialogue_id,
                            turn_index,
                            ..
                        },
                    ),
                    None,
                ) => live = Some(self.insert(dialogue_id.clone(), *turn_index, start.clone())),
                (_, Some(turn)) => turn.push(&event),
                // An error before the start: nothing to resume.
                (_, None) => {}
            }
            if let Some(c) = &client
                && c.send(event).await.is_err()
            {
                tracing::debug!("resumable stream left by its client; the turn goes on");
                client = None;
            }
        }
    }

    fn insert(&self, id: DialogueId, index: u64, start: StreamEvent) -> Arc<LiveTurn> {
        let turn = Arc::new(LiveTurn {
            state: Mutex::new(LiveState {
                start,
                text: String::new(),
                calls: Vec::new(),
                end: None,
            }),
            events: broadcast::channel(LAG).0,
        });
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        // Forget turns that ended long enough ago (lazily, on insert).
        turns.retain(|_, t| {
            let state = t.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .end
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() < RETAIN)
        });
        turns.insert((id, index), turn.clone());
        turn
    }

    /// The live (or recently ended) turn `index` of `id`, attached to.
    pub fn attach(&self, id: &DialogueId, index: u64) -> Option<Attached> {
        let turn = self
            .turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(id.clone(), index))
            .cloned()?;
        let state = turn.state.lock().unwrap_or_else(|p| p.into_inner());
        Some(Attached {
            start: state.start.clone(),
            text: state.text.clone(),
            calls: state.calls.clone(),
            end: state.end.as_ref().map(|(e, _)| e.clone()),
            rest: turn.events.subscribe(),
        })
    }

    /// Live turns currently kept (for tests and metrics).
    pub fn len(&self) -> usize {
        self.turns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LiveTurn {
    fn push(&self, event: &Event) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Ok(StreamEvent::Delta { text, .. }) => state.text.push_str(text),
            Ok(call @ StreamEvent::ToolCallDelta { .. }) => state.calls.push(call.clone()),
            Ok(StreamEvent::End(_)) | Err(_) => state.end = Some((event.clone(), Instant::now())),
            // Log probabilities are not sent again to re-attaching clients.
            Ok(StreamEvent::Start { .. }) => {}
        }
        // No subscriber is fine: nobody re-attached.
        let _ = self.events.send(event.clone());
    }
}
