//! The Redis store's own tests (the shared contract is `store::suite`).

use super::*;

#[tokio::test]
async fn the_sweep_repairs_expiry_entries_a_crash_left_out_of_step() {
    let prefix = format!("test-{:016x}:", rand::random::<u64>());
    let redis = RedisConnection::connect(&RedisConnection::settings(
        "redis://127.0.0.1:6379",
        &[],
        &prefix,
    ))
    .await
    .expect("a redis-server on 127.0.0.1:6379 (.ci/run starts one)");
    let store = RedisStore::new(redis, crate::store::sealing::Sealer::default());
    let owner = crate::store::suite::owner("p");
    let now = Time::now();
    let mut dialogue = crate::store::suite::dialogue("kept", &owner, now.0);
    store.create_dialogue(&dialogue).await.unwrap();
    let later = Time(now.0 + 3_600_000_000_000);
    dialogue.id = DialogueId::parse("later").unwrap().scoped_to(&owner);
    dialogue.expire_time = Some(later);
    store.create_dialogue(&dialogue).await.unwrap();
    // Stale entries, as a crash between the index and the write leaves
    // them: one never expiring, one expiring later, one gone.
    let gone = DialogueId::parse("gone").unwrap().scoped_to(&owner);
    let past = RedisStore::expiry_score(Time(now.0 - 1));
    let mut con = store.con().unwrap();
    for id in ["kept", "later"].map(|p| DialogueId::parse(p).unwrap().scoped_to(&owner)) {
        let _: () = con.zadd(store.expiry(), id.as_str(), past).await.unwrap();
    }
    let _: () = con.zadd(store.expiry(), gone.as_str(), past).await.unwrap();

    let report = store.sweep_expired(now).await.unwrap();
    assert!(report.expired_dialogues.is_empty(), "{report:?}");
    let left: Vec<(String, f64)> = con.zrange_withscores(store.expiry(), 0, -1).await.unwrap();
    assert_eq!(
        left,
        vec![(
            dialogue.id.as_str().to_owned(),
            RedisStore::expiry_score(later)
        )]
    );
}
