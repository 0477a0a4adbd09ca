//! Helpers shared by the engine's scenario tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use logbook_protocol::{Direction, EventId, NewEvent, StreamName};
use logbook_storage::backup::BackupImage;
use logbook_storage::fs::MemFs;
use logbook_storage::{Durability, Store, StoreConfig, StoreStats};

/// A configuration with tiny segments and memtables, so that roll-over,
/// index flushes and merges all happen within a few hundred events.
pub fn tiny(dir: &Path) -> StoreConfig {
    StoreConfig {
        segment_bytes: 4 << 10,
        max_batch_bytes: 2 << 10,
        max_event_bytes: 1 << 10,
        max_group_bytes: 4 << 10,
        index_flush_entries: 16,
        head_cache_streams: 8,
        preallocate_bytes: 1 << 10,
        read_chunk_bytes: 4 << 10,
        // Every test over tiny segments also closes and reopens files, and
        // drops and reloads sparse position indexes, all the time.
        max_open_files: 3,
        testing: logbook_storage::TestKnobs {
            pidx_budget_entries: Some(2),
            ..Default::default()
        },
        ..StoreConfig::new(dir)
    }
}

/// `tiny` on an in-memory file system.
pub fn tiny_mem(fs: &MemFs) -> StoreConfig {
    StoreConfig {
        vfs: Arc::new(fs.clone()),
        ..tiny(Path::new("/data"))
    }
}

/// `tiny` without fsync, for tests that do not test durability.
pub fn tiny_fast(dir: &Path) -> StoreConfig {
    StoreConfig {
        durability: Durability::Os,
        ..tiny(dir)
    }
}

pub fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

/// An event whose id and payload are derived from `n`.
pub fn ev(n: u64) -> NewEvent {
    NewEvent::new(
        EventId::from_u128(u128::from(n) + 1),
        format!("Type{}", n % 3),
        format!("payload-{n}-{}", "x".repeat((n % 50) as usize)),
    )
    .with_metadata(format!("{{\"n\":{n}}}"))
}

pub fn evs(from: u64, n: u64) -> Vec<NewEvent> {
    (from..from + n).map(ev).collect()
}

/// Polls the store's figures until `done` holds: for what background
/// threads (index flushes and merges) do in their own time. A failure
/// detector bounds the wait; nothing polled for takes more than a second
/// or two.
pub fn wait_until(store: &Store, what: &str, done: impl Fn(&StoreStats) -> bool) -> StoreStats {
    let started = std::time::Instant::now();
    loop {
        let s = store.stats();
        if done(&s) {
            return s;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "never: {what}; {s:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Writes `image` into `to` the way a backup client does, reading each
/// file in small pieces up to its image length (and nothing past it).
pub fn write_image(image: &BackupImage, to: &Path) {
    for f in &image.files {
        let path = to.join(&f.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bytes = Vec::new();
        let mut at = 0;
        while at < f.len {
            let chunk = f.read(at, 1000).unwrap();
            assert!(!chunk.is_empty());
            at += chunk.len() as u64;
            bytes.extend_from_slice(&chunk);
        }
        assert!(f.read(f.len, 10).unwrap().is_empty());
        std::fs::write(path, bytes).unwrap();
    }
    std::fs::create_dir_all(to.join("index")).unwrap();
    std::fs::write(to.join("index/MANIFEST"), &image.manifest).unwrap();
}

/// Every live event of `store` as reads see it: stream, version,
/// position, id and commit time.
pub fn events(store: &Store) -> Vec<(String, u64, u64, EventId, i64)> {
    store
        .read_all(None, Direction::Forward, 100_000)
        .unwrap()
        .events
        .into_iter()
        .map(|e| {
            (
                e.stream.as_str().to_owned(),
                e.version.0,
                e.position.0,
                e.id,
                e.timestamp_us,
            )
        })
        .collect()
}
