use super::*;

fn ring(entries: &[&str], primary: &str) -> Sealer {
    Sealer::new(Some(KeyRing::parse(&entries.join("\n"), primary).unwrap()))
}

fn entry(id: &str) -> String {
    KeyRing::new_entry(id)
}

#[test]
fn a_sealed_record_opens_only_under_its_own_key_and_name() {
    let (a, b) = (entry("a"), entry("b"));
    let sealer = ring(&[&a], "a");
    let sealed = sealer.seal(b"t/d1", b"secret text".to_vec());
    assert!(!sealed.windows(6).any(|w| w == b"secret"));
    assert_eq!(
        sealer.open(b"t/d1", &sealed).unwrap().as_ref(),
        b"secret text"
    );
    assert!(matches!(
        sealer.open(b"t/d2", &sealed),
        Err(SealError::Tampered(_))
    ));
    let mut flipped = sealed.clone();
    let last = flipped.len() - 3;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    assert!(sealer.open(b"t/d1", &flipped).is_err());
    assert!(matches!(
        ring(&[&b], "b").open(b"t/d1", &sealed),
        Err(SealError::UnknownKey(..))
    ));
    assert!(matches!(
        Sealer::default().open(b"t/d1", &sealed),
        Err(SealError::NoKeyRing(_))
    ));
    // Written before encryption: read as it is.
    assert_eq!(
        sealer.open(b"t/d1", b"{\"v\":2}").unwrap().as_ref(),
        b"{\"v\":2}"
    );
}

#[test]
fn rotation_keeps_old_records_readable_and_marks_them_for_rekey() {
    let (old, new) = (entry("old"), entry("new"));
    let before = ring(&[&old], "old");
    let sealed = before.seal(b"m/d", b"x".to_vec());
    let after = ring(&[&old, &new], "new");
    assert_eq!(after.open(b"m/d", &sealed).unwrap().as_ref(), b"x");
    assert!(after.needs_rekey(&sealed));
    assert!(after.needs_rekey(b"{}"));
    assert!(!after.needs_rekey(&after.seal(b"m/d", b"x".to_vec())));
}

#[test]
fn the_key_check_catches_missing_and_wrong_keys() {
    let (k1, k2) = (entry("k1"), entry("k2"));
    let first = ring(&[&k1], "k1");
    let record = first
        .check_keys(None, false)
        .unwrap()
        .expect("written at first");
    assert_eq!(first.check_keys(Some(&record), false).unwrap(), None);
    // A new primary joins the record; the old key stays listed.
    let rotated = ring(&[&k1, &k2], "k2");
    let record = rotated.check_keys(Some(&record), false).unwrap().unwrap();
    let err = ring(&[&k2], "k2")
        .check_keys(Some(&record), false)
        .unwrap_err();
    assert!(
        err.contains("\"k1\"") && err.contains("does not hold"),
        "{err}"
    );
    let wrong_k1 = entry("k1");
    let err = ring(&[&wrong_k1, &k2], "k2")
        .check_keys(Some(&record), false)
        .unwrap_err();
    assert!(err.contains("not the key"), "{err}");
    let err = Sealer::default()
        .check_keys(Some(&record), false)
        .unwrap_err();
    assert!(err.contains("encrypted"), "{err}");
    // An entry left in clear, or sealed with another key than it names.
    let clear = br#"{"keys":{"k1":"dialogd"}}"#;
    assert!(
        first
            .check_keys(Some(clear), false)
            .unwrap_err()
            .contains("damaged")
    );
    let swapped = String::from_utf8(rotated.seal(KEY_CHECK_AAD, CANARY.to_vec())).unwrap();
    let swapped = serde_json::json!({"keys": {"k1": swapped}}).to_string();
    let err = rotated
        .check_keys(Some(swapped.as_bytes()), false)
        .unwrap_err();
    assert!(err.contains("damaged"), "{err}");
    // After a rekey only the primary is in use: k1 may go.
    let record = rotated.check_keys(Some(&record), true).unwrap().unwrap();
    assert!(ring(&[&k2], "k2").check_keys(Some(&record), false).is_ok());
}

#[test]
fn bad_rings_are_refused_with_the_reason() {
    let k = entry("k");
    for (text, primary, expected) in [
        ("k:c2hvcnQ=", "k", "32 bytes"),
        ("k:!!!", "k", "base64"),
        (k.as_str(), "other", "primary"),
        ("nocolon", "k", "id:base64"),
    ] {
        let err = KeyRing::parse(text, primary).err().unwrap();
        assert!(err.contains(expected), "{text}: {err}");
    }
    assert!(KeyRing::parse(&format!("{k},{k}"), "k").is_err());
}
