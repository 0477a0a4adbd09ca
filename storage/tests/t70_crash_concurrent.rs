//! Power cuts in the middle of concurrent appends, simulated by the
//! in-memory file system: every acknowledged batch survives with identical
//! content, nothing else appears half-written, positions stay dense and
//! stream versions contiguous.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use logbook_protocol::{AppendResult, Direction, EventId, ExpectedVersion, NewEvent};
use logbook_storage::Store;
use logbook_storage::fs::{CrashMode, MemFs};
use parking_lot::Mutex;

#[derive(Clone)]
struct Sent {
    stream: String,
    events: Vec<NewEvent>,
}

async fn one_run(seed: u64) {
    let fs = MemFs::new();
    let store = Arc::new(Store::open(tiny_mem(&fs)).unwrap());
    let sent: Arc<Mutex<HashMap<u128, Sent>>> = Arc::default();
    let acked: Arc<Mutex<Vec<(u128, AppendResult)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (store, sent, acked, stop) = (
            Arc::clone(&store),
            Arc::clone(&sent),
            Arc::clone(&acked),
            Arc::clone(&stop),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = 1 + (i + t) % 3;
                let base = u128::from(t) << 64 | u128::from(i) << 8;
                let events: Vec<NewEvent> = (0..n)
                    .map(|k| {
                        NewEvent::new(
                            EventId::from_u128(base + u128::from(k)),
                            "E",
                            format!("{t}-{i}-{k}-{seed}"),
                        )
                    })
                    .collect();
                let stream = format!("s-{}", (t + i) % 5);
                sent.lock().insert(
                    base,
                    Sent {
                        stream: stream.clone(),
                        events: events.clone(),
                    },
                );
                if let Ok(r) = store
                    .append(&name(&stream), ExpectedVersion::Any, events)
                    .await
                {
                    acked.lock().push((base, r));
                }
                i += 1;
            }
        }));
    }
    // Let some appends through, then cut the power.
    while acked.lock().len() < 40 + (seed % 50) as usize {
        tokio::task::yield_now().await;
    }
    let acked_before: Vec<(u128, AppendResult)> = acked.lock().clone();
    let mode = if seed.is_multiple_of(2) {
        CrashMode::DropUnsynced
    } else {
        CrashMode::TornUnsynced { seed }
    };
    let crashed = fs.crash(mode);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let store2 = Store::open(tiny_mem(&crashed)).unwrap();
    let all = store2
        .read_all(None, Direction::Forward, 1_000_000)
        .unwrap()
        .events;
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.position.0 == i as u64),
        "positions are dense"
    );
    // Acknowledged batches are all there, at the acknowledged positions.
    for (base, r) in &acked_before {
        let s = &sent.lock()[base];
        for (k, e) in s.events.iter().enumerate() {
            let got = &all[r.first_position.0 as usize + k];
            assert_eq!(got.id, e.id);
            assert_eq!(got.data, e.data);
            assert_eq!(got.stream.as_str(), s.stream);
            assert_eq!(got.version.0, r.first_version.0 + k as u64);
        }
    }
    // Everything present is a whole batch that was sent; versions are
    // contiguous per stream.
    let sent = sent.lock();
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut i = 0;
    while i < all.len() {
        let base = all[i].id.as_u128() & !0xff;
        let s = sent.get(&base).expect("an event that was never sent");
        assert_eq!(
            all[i].id.as_u128(),
            base,
            "a batch starts with its first event"
        );
        for (k, e) in s.events.iter().enumerate() {
            let got = &all[i + k];
            assert_eq!(got.id, e.id, "batch is whole");
            assert_eq!(got.data, e.data);
            let v = versions.entry(s.stream.clone()).or_insert(0);
            assert_eq!(got.version.0, *v);
            *v += 1;
        }
        i += s.events.len();
    }
    let report = store2.recovery_report().clone();
    drop(store2);
    let v = logbook_storage::verify(&tiny_mem(&crashed), |_| {}).unwrap();
    assert!(
        v.is_ok(),
        "seed {seed}: {:?} (recovery: {report:?})",
        v.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn acknowledged_appends_survive_power_cuts() {
    for seed in 0..24 {
        one_run(seed).await;
    }
}
