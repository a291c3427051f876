//! Scenario (f)'s data: a store of many turns written straight through the
//! store API (the same code path a turn's commit takes, minus the model),
//! in dialogues of 1,000 turns owned by the local (auth "none") caller.

use dialogd::config::{Durability, StoreSettings};
use dialogd::dialogue::model::{
    ContentPart, Dialogue, DialogueId, FinishReason, Owner, Role, Time, Turn, Usage,
};
use dialogd::dialogue::ports::{DialogueStore, ExchangeCommit};
use dialogd::store::sled::SledStore;
use std::path::Path;
use std::sync::Arc;

const TURNS_PER_DIALOGUE: u64 = 1000;
const WRITERS: u64 = 4;

fn turn(index: u64, role: Role, text: &str, now: Time) -> Turn {
    Turn {
        index,
        role,
        content: vec![ContentPart::Text(text.to_owned())],
        create_time: now,
        finish_reason: (role == Role::Assistant).then_some(FinishReason::Stop),
        model: if role == Role::Assistant {
            "echo".into()
        } else {
            String::new()
        },
        usage: (role == Role::Assistant).then_some(Usage {
            prompt_tokens: 20,
            completion_tokens: 18,
        }),
        request_id: None,
        tokens: 18,
        summary: None,
        added: false,
        rule: None,
    }
}

/// Writes `turns` turns; returns how many dialogues hold them.
pub async fn fill_store(data: &Path, turns: u64) -> Result<u64, String> {
    let settings = StoreSettings {
        data_dir: data.to_path_buf(),
        durability: Durability::Relaxed,
        ..StoreSettings::default()
    };
    let store = Arc::new(SledStore::open(&settings).map_err(|e| e.to_string())?);
    let dialogues = turns.div_ceil(TURNS_PER_DIALOGUE);
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.spawn(async move {
            let owner = Owner::default();
            for d in (w..dialogues).step_by(WRITERS as usize) {
                let public = DialogueId::parse(&format!("filled-{d}")).map_err(str::to_owned)?;
                let now = Time::now();
                let dialogue = Dialogue {
                    id: public.scoped_to(&owner),
                    owner: owner.clone(),
                    model: "echo".into(),
                    system_prompt: String::new(),
                    labels: Default::default(),
                    state: None,
                    expire_time: None,
                    create_time: now,
                    update_time: now,
                    turn_count: 0,
                    latest_summary: None,
                    media_bytes: 0,
                    system_prompt_tokens: 0,
                    fork: None,
                    branches: Vec::new(),
                };
                for i in (0..TURNS_PER_DIALOGUE).step_by(2) {
                    let user = turn(i, Role::User, "What is the weather like in Lisbon today, and should I bring a coat?", now);
                    let reply = turn(i + 1, Role::Assistant, "echo: What is the weather like in Lisbon today, and should I bring a coat?", now);
                    store
                        .commit_exchange(ExchangeCommit {
                            create: (i == 0).then_some(&dialogue),
                            dialogue_id: &dialogue.id,
                            expected_turn_count: i,
                            turns: &[&user, &reply],
                            idempotency: None,
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok::<(), String>(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(dialogues)
}
