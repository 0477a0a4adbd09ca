//! `FileCheckpointStore`: what it saves is what it loads, replaced
//! atomically, and damage is reported, never read as a position.

use std::io;

use logbook_client::{
    Checkpoint, CheckpointStore, FileCheckpointStore, LogPosition, StreamVersion,
};

#[tokio::test]
async fn saves_load_back_and_replace_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::new(dir.path().join("cp"));
    assert_eq!(store.load().await.unwrap(), None, "nothing saved yet");

    let first = Checkpoint::All {
        next: LogPosition(1),
    };
    store.save(&first).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Some(first));
    let second = Checkpoint::Stream {
        next: StreamVersion(u64::MAX),
    };
    store.save(&second).await.unwrap();
    assert_eq!(store.load().await.unwrap(), Some(second));
    // A new store over the same file (a restart) reads it.
    let again = FileCheckpointStore::new(store.path());
    assert_eq!(again.load().await.unwrap(), Some(second));
    // Only the checkpoint is left: the temporary file was renamed.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["cp"]);
}

#[tokio::test]
async fn saves_through_clones_are_serialised() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::new(dir.path().join("cp"));
    let saves: Vec<_> = (0..32u64)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .save(&Checkpoint::All {
                        next: LogPosition(n),
                    })
                    .await
            })
        })
        .collect();
    for save in saves {
        save.await.unwrap().unwrap();
    }
    assert!(matches!(
        store.load().await.unwrap(),
        Some(Checkpoint::All { next }) if next.0 < 32
    ));
}

#[tokio::test]
async fn a_stale_temporary_file_is_ignored_and_damage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp");
    let store = FileCheckpointStore::new(&path);
    let cp = Checkpoint::All {
        next: LogPosition(77),
    };
    store.save(&cp).await.unwrap();
    // A crash between writing the temporary file and renaming it.
    std::fs::write(dir.path().join("cp.tmp"), b"half").unwrap();
    assert_eq!(store.load().await.unwrap(), Some(cp));
    store.save(&cp).await.unwrap();

    let mut bytes = std::fs::read(&path).unwrap();
    bytes[9] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = store.load().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("checksum"), "{err}");

    std::fs::write(&path, b"").unwrap();
    let err = store.load().await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

#[tokio::test]
async fn a_missing_directory_fails_the_save() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileCheckpointStore::new(dir.path().join("missing").join("cp"));
    let err = store
        .save(&Checkpoint::All {
            next: LogPosition(1),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}
