//! The audit log: events listed in pages and windows, swept by age; a
//! writer's batch (several events at once) reads back event by event.

use crate::audit::{AuditEvent, AuditFilter, AuditLog};
use crate::dialogue::model::Time;

fn event(nanos: i64, who: &str, action: &str) -> AuditEvent {
    AuditEvent {
        time: Time(nanos),
        request_id: format!("r{nanos}"),
        principal: who.into(),
        tenant: "t".into(),
        client_ip: "127.0.0.1".into(),
        action: action.into(),
        resource: "dialogues/x".into(),
        status: "Ok".into(),
        duration_ms: 1.0,
    }
}

/// Every page of `filter`, `limit` events each, as the events' times.
async fn listed(store: &dyn AuditLog, filter: &AuditFilter, limit: usize) -> Vec<i64> {
    let mut times = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, next) = store
            .list_audit(filter, after.as_deref(), limit)
            .await
            .unwrap();
        assert!(page.len() <= limit);
        times.extend(page.iter().map(|e| e.time.0));
        match next {
            Some(c) => after = Some(c),
            None => return times,
        }
    }
}

pub async fn audit_events(store: &dyn AuditLog) {
    let event = |secs: i64, who: &str, action: &str| event(secs * 1_000_000_000, who, action);
    for (secs, who, action) in [
        (1, "a", "Create"),
        (2, "b", "Delete"),
        (3, "a", "Delete"),
        (4, "a", "Create"),
    ] {
        store.append_audit(&event(secs, who, action)).await.unwrap();
    }
    let all = AuditFilter::default();
    let mut times = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, next) = store.list_audit(&all, after.as_deref(), 3).await.unwrap();
        times.extend(page.iter().map(|e| e.time.0 / 1_000_000_000));
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(times, [1, 2, 3, 4]);
    let filter = AuditFilter {
        principal: Some("a".into()),
        action: Some("Delete".into()),
        ..AuditFilter::default()
    };
    let (only, _) = store.list_audit(&filter, None, 10).await.unwrap();
    assert_eq!(only.len(), 1);
    let window = AuditFilter {
        from: Some(Time(2_000_000_000)),
        to: Some(Time(4_000_000_000)),
        ..AuditFilter::default()
    };
    let (inside, _) = store.list_audit(&window, None, 10).await.unwrap();
    assert_eq!(inside.len(), 2);
    assert_eq!(store.sweep_audit(Time(3_000_000_000)).await.unwrap(), 2);
    let (left, _) = store.list_audit(&all, None, 10).await.unwrap();
    assert_eq!(left.len(), 2);
}

/// A batch spanning several seconds, given out of order, after the events
/// `audit_events` left (at 3 s and 4 s).
pub async fn audit_batches(store: &dyn AuditLog) {
    const MS: i64 = 1_000_000;
    let times = [
        10_000, 10_200, 10_900, 11_500, 11_600, 13_000, 13_001, 13_002, 15_000,
    ];
    let mut batch: Vec<AuditEvent> = times
        .iter()
        .map(|&t| event(t * MS, if t % 2 == 0 { "a" } else { "b" }, "Create"))
        .collect();
    batch.reverse();
    store.append_audit_batch(&batch).await.unwrap();
    let in_ms = |v: Vec<i64>| v.into_iter().map(|t| t / MS).collect::<Vec<_>>();
    let mut everything = vec![3_000, 4_000];
    everything.extend(times);
    // Pages of every size cut batches anywhere and lose or repeat nothing.
    for limit in [1, 2, 3, 4, 20] {
        let all = listed(store, &AuditFilter::default(), limit).await;
        assert_eq!(in_ms(all), everything, "pages of {limit}");
    }
    // Windows are exact to the event, even inside a batch.
    let window = AuditFilter {
        from: Some(Time(10_900 * MS)),
        to: Some(Time(13_001 * MS)),
        ..AuditFilter::default()
    };
    assert_eq!(
        in_ms(listed(store, &window, 2).await),
        [10_900, 11_500, 11_600, 13_000]
    );
    let only_b = AuditFilter {
        principal: Some("b".into()),
        ..AuditFilter::default()
    };
    assert_eq!(in_ms(listed(store, &only_b, 2).await), [13_001]);
    // A sweep removes exactly the events before its time.
    assert_eq!(store.sweep_audit(Time(11_550 * MS)).await.unwrap(), 6);
    assert_eq!(
        in_ms(listed(store, &AuditFilter::default(), 3).await),
        [11_600, 13_000, 13_001, 13_002, 15_000]
    );
}
