//! The writer queue is bounded in bytes: appends wait for room instead of
//! piling up in memory, every one of them still commits in order, and an
//! append larger than the whole bound waits for an empty queue rather than
//! for ever.

use logbook_protocol::{EventId, ExpectedVersion, NewEvent, StreamName, Text};
use logbook_storage::{Durability, Store, StoreConfig};

fn event(id: u128, bytes: usize) -> NewEvent {
    NewEvent::new(EventId::from_u128(id), "T", vec![7u8; bytes])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_wait_for_room_in_a_queue_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        durability: Durability::Os,
        // Room for about two appends of 40 KiB at a time.
        writer_queue_bytes: 100 << 10,
        ..StoreConfig::new(dir.path())
    })
    .unwrap();
    let mut tasks = Vec::new();
    for t in 0..16u128 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let name = StreamName::new(Text::from(format!("s-{t}"))).unwrap();
            for i in 0..20u128 {
                let expected = match i {
                    0 => ExpectedVersion::NoStream,
                    _ => ExpectedVersion::Exact(logbook_protocol::StreamVersion(i as u64 - 1)),
                };
                let r = store
                    .append(&name, expected, vec![event(t << 32 | i, 40 << 10)])
                    .await
                    .expect("append");
                assert_eq!(r.first_version.0, i as u64);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Larger than the whole bound (200 KiB in five events): it waits for
    // the queue to be empty, and commits.
    let name = StreamName::new(Text::from("big")).unwrap();
    let events = (0..5).map(|i| event(1 << 100 | i, 40 << 10)).collect();
    store
        .append(&name, ExpectedVersion::NoStream, events)
        .await
        .expect("a batch larger than the queue");
    assert_eq!(store.head().0, 16 * 20 + 5);
    store.close().unwrap();
}
