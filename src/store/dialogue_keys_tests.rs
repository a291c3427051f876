use super::*;
use crate::store::sealing::{SealError, Sealer};

fn ring(entries: &[&str], primary: &str) -> Arc<KeyRing> {
    Arc::new(KeyRing::parse(&entries.join("\n"), primary).unwrap())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn keys_survive_a_reopen_and_a_destroyed_key_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let k1 = KeyRing::new_entry("k1");
    let keys = DialogueKeys::open(&path, ring(&[&k1], "k1")).unwrap();
    assert!(keys.is_empty());
    let a = keys.ensure("owner~dialogue-a").unwrap();
    let b = keys.ensure("owner~dialogue-b").unwrap();
    assert_ne!(a, b);
    assert_eq!(keys.ensure("owner~dialogue-a").unwrap(), a, "created once");
    let file = std::fs::read(&path).unwrap();
    assert!(!contains(&file, &a), "a data key is stored wrapped");
    drop(keys);

    let keys = DialogueKeys::open(&path, ring(&[&k1], "k1")).unwrap();
    assert_eq!((keys.get("owner~dialogue-a"), keys.len()), (Some(a), 2));
    assert!(keys.destroy("owner~dialogue-a").unwrap());
    assert!(!keys.destroy("owner~dialogue-a").unwrap());
    let file = std::fs::read(&path).unwrap();
    assert!(!contains(&file, b"dialogue-a") && contains(&file, b"dialogue-b"));
    // The freed slot is reused: the file does not grow.
    keys.ensure("owner~dialogue-c").unwrap();
    assert_eq!(std::fs::read(&path).unwrap().len(), file.len());
    drop(keys);
    let keys = DialogueKeys::open(&path, ring(&[&k1], "k1")).unwrap();
    assert_eq!(keys.get("owner~dialogue-a"), None);
    assert_eq!(keys.get("owner~dialogue-b"), Some(b));
}

#[test]
fn an_interrupted_erasure_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let k1 = KeyRing::new_entry("k1");
    let keys = DialogueKeys::open(&path, ring(&[&k1], "k1")).unwrap();
    keys.ensure("d1").unwrap();
    keys.ensure("d2").unwrap();
    assert!(keys.mark_erasing("d2").unwrap());
    assert!(!keys.mark_erasing("d3").unwrap());
    drop(keys);
    let keys = DialogueKeys::open(&path, ring(&[&k1], "k1")).unwrap();
    assert_eq!(keys.erasing(), vec!["d2".to_owned()]);
    assert!(keys.get("d2").is_some(), "readable until destroyed");
}

#[test]
fn a_wrong_or_missing_wrapping_key_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let (k1, k2) = (KeyRing::new_entry("k1"), KeyRing::new_entry("k2"));
    DialogueKeys::open(&path, ring(&[&k1], "k1"))
        .unwrap()
        .ensure("d1")
        .unwrap();
    let held = DialogueKeys::open(&path, ring(&[&k1], "k1")).unwrap();
    let err = DialogueKeys::open(&path, ring(&[&k1], "k1")).err().unwrap();
    assert!(err.contains("in use by another"), "{err}");
    drop(held);
    let err = DialogueKeys::open(&path, ring(&[&k2], "k2")).err().unwrap();
    assert!(
        err.contains("\"k1\"") && err.contains("does not hold"),
        "{err}"
    );
    let other_k1 = KeyRing::new_entry("k1");
    let err = DialogueKeys::open(&path, ring(&[&other_k1], "k1"))
        .err()
        .unwrap();
    assert!(err.contains("fails authentication"), "{err}");
    std::fs::write(dir.path().join("other"), b"not keys").unwrap();
    let err = DialogueKeys::open(&dir.path().join("other"), ring(&[&k1], "k1"))
        .err()
        .unwrap();
    assert!(err.contains("bad header"), "{err}");
}

#[test]
fn rewrap_lets_the_old_ring_key_go() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let (k1, k2) = (KeyRing::new_entry("k1"), KeyRing::new_entry("k2"));
    let keys = DialogueKeys::open(&path, ring(&[&k1], "k1")).unwrap();
    let a = keys.ensure("a").unwrap();
    keys.ensure("b").unwrap();
    drop(keys);
    let keys = DialogueKeys::open(&path, ring(&[&k1, &k2], "k2")).unwrap();
    assert_eq!(keys.rewrap().unwrap(), 2);
    assert_eq!(keys.rewrap().unwrap(), 0);
    drop(keys);
    let keys = DialogueKeys::open(&path, ring(&[&k2], "k2")).unwrap();
    assert_eq!(keys.get("a"), Some(a));
}

#[test]
fn a_cut_short_last_slot_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let k1 = KeyRing::new_entry("k1");
    let keys = DialogueKeys::open(&path, ring(&[&k1], "k1")).unwrap();
    keys.ensure("a").unwrap();
    drop(keys);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&[1u8; 100]);
    std::fs::write(&path, &bytes).unwrap();
    let keys = DialogueKeys::open(&path, ring(&[&k1], "k1")).unwrap();
    keys.ensure("b").unwrap();
    assert_eq!(std::fs::read(&path).unwrap().len(), 3 * SLOT);
}

#[test]
fn records_sealed_with_a_dialogue_key_are_lost_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = KeyRing::new_entry("k1");
    let sealer = Sealer::new(Some(KeyRing::parse(&k1, "k1").unwrap()))
        .with_dialogue_keys(&dir.path().join("keys"))
        .unwrap();
    let keys = sealer.dialogue_keys().unwrap().clone();
    assert!(matches!(
        sealer.seal_in(Some("d1"), b"t/d1", b"x".to_vec()),
        Err(SealError::Shredded(_))
    ));
    keys.ensure("d1").unwrap();
    let sealed = sealer
        .seal_in(Some("d1"), b"t/d1", b"secret text".to_vec())
        .unwrap();
    assert!(!contains(&sealed, b"secret"));
    assert_eq!(Sealer::sealed_in_dialogue(&sealed), Some("d1"));
    assert_eq!(
        sealer.open(b"t/d1", &sealed).unwrap().as_ref(),
        b"secret text"
    );
    assert!(!sealer.needs_rekey(&sealed));
    assert!(sealer.needs_rekey(&sealer.seal(b"t/d1", b"x".to_vec())));
    assert!(matches!(
        sealer.open(b"t/d2", &sealed),
        Err(SealError::Tampered(_))
    ));
    let ring_only = Sealer::new(Some(KeyRing::parse(&k1, "k1").unwrap()));
    assert!(matches!(
        ring_only.open(b"t/d1", &sealed),
        Err(SealError::NoDialogueKeys(_))
    ));
    keys.destroy("d1").unwrap();
    assert!(matches!(
        sealer.open(b"t/d1", &sealed),
        Err(SealError::Shredded(_))
    ));
}
