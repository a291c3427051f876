use crate::config::{Durability, EncryptionSettings, StoreSettings};
use crate::dialogue::ports::{DialogueStore, OperationPut, OperationStore};
use crate::store::sled::SledStore;
use crate::store::suite::{dialogue, owner};

fn settings(dir: &std::path::Path, dialogue_keys: bool) -> StoreSettings {
    StoreSettings {
        data_dir: dir.join("data"),
        durability: Durability::Relaxed,
        encryption: EncryptionSettings {
            key_file: Some(dir.join("ring")),
            keys_env: None,
            primary: Some("k1".into()),
            dialogue_key_file: dialogue_keys.then(|| dir.join("dialogue-keys")),
        },
        ..StoreSettings::default()
    }
}

/// Records sealed with the ring before per-dialogue keys were turned on
/// are sealed again with their dialogue's key by a rekey — operation
/// records included — so erasing the dialogue then shreds them too.
#[tokio::test]
async fn rekey_moves_older_records_under_their_dialogues_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ring"),
        crate::store::sealing::KeyRing::new_entry("k1"),
    )
    .unwrap();
    let d = dialogue("d", &owner("p"), 1_000);
    {
        let store = SledStore::open(&settings(dir.path(), false)).unwrap();
        store.check_keys(false).await.unwrap();
        store.create_dialogue(&d).await.unwrap();
        store
            .put_operation(OperationPut {
                id: "op-1",
                dialogue: &d.id,
                record: b"{\"request\":\"secret\"}",
                expire_time: None,
            })
            .await
            .unwrap();
    }
    let store = SledStore::open(&settings(dir.path(), true)).unwrap();
    store.check_keys(false).await.unwrap();
    let sealed_with = |key: &[u8]| store.tree.get(key).unwrap().unwrap()[..4].to_vec();
    assert_eq!(sealed_with(b"o/op-1"), b"\x01s1:");
    // Readable before the rekey; one key created per dialogue.
    assert_eq!(store.get_dialogue(&d.id).await.unwrap().unwrap().id, d.id);
    assert_eq!(store.rekey().await.unwrap(), 2);
    assert_eq!(sealed_with(b"o/op-1"), b"\x01d1:");
    assert_eq!(sealed_with(&super::keys::meta(&d.id)), b"\x01d1:");
    assert_eq!(
        store.get_operation("op-1").await.unwrap().unwrap(),
        b"{\"request\":\"secret\"}"
    );
    let keys = store.dialogue_keys().unwrap();
    assert!(keys.get(d.id.as_str()).is_some());
    assert!(store.delete_dialogue(&d.id).await.unwrap());
    assert!(keys.is_empty());
    assert_eq!(store.get_operation("op-1").await.unwrap(), None);
}
