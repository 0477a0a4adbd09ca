//! Hostile clients against the built `logbookd`: idle connections, clients
//! that declare the largest frame and trickle it, subscribers that never
//! read, and a flood of requests whose replies are never read. The daemon's
//! resident memory stays under a documented bound (asserted), limits answer
//! with clear errors, and a well-behaved client is served throughout (its
//! latency is printed for RELIABILITY.md, not asserted: timing is for
//! benchmarks).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use logbook_client::{Client, ExpectedVersion, NewEvent};
use logbook_protocol::{
    EventId, Ping, ReadAll, Request, Subscribe, SubscribeFrom, SubscriptionTarget,
};
use logbook_tests::RawConn;
use logbook_tests::daemon::Daemon;

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// p50 and p99 of a well-behaved client's round trips (ping, then a small
/// append), `n` of each.
async fn good_client_latency(client: &Client, n: usize, tag: u128) -> (Duration, Duration) {
    let mut lat = Vec::with_capacity(2 * n);
    for i in 0..n {
        let t = Instant::now();
        client.ping().await.expect("ping served");
        lat.push(t.elapsed());
        let t = Instant::now();
        let e = NewEvent::new(EventId::from_u128(tag << 32 | i as u128), "Good", "x");
        client
            .append("good", ExpectedVersion::Any, vec![e])
            .await
            .expect("append served");
        lat.push(t.elapsed());
    }
    lat.sort();
    (lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_hostile_clients() {
    let dir = tempfile::tempdir().unwrap();
    // Frames still arriving after 15 s are dropped: the tricklers below end
    // with an error frame either way, which the test counts at the end.
    let daemon = Daemon::start(dir.path(), &["--frame-timeout-secs", "15"]);
    let pid = daemon.child.id();
    let addr = daemon.addr;
    let good = Client::connect(addr).await.unwrap();
    // Warm up: some data to subscribe to, and the baseline.
    for i in 0..200u128 {
        let e = NewEvent::new(EventId::from_u128(1 << 100 | i), "Big", vec![b'x'; 4096]);
        good.append("big", ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    let (base_p50, base_p99) = good_client_latency(&good, 200, 1).await;
    let baseline = rss(pid);

    // Sample the daemon's memory for as long as the attack lasts.
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // 1. Connections that open and do nothing.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // 2. Clients that declare the largest frame (16 MiB) and send half of
    //    it: the first 16 fit the 256 MiB budget for frames in progress,
    //    the rest are refused with ServerBusy.
    let mut tricklers = Vec::new();
    for _ in 0..20 {
        let mut c = RawConn::connect(addr).await;
        c.hello().await;
        let mut start = ((16u32 << 20) - 4).to_le_bytes().to_vec();
        start.extend_from_slice(&vec![0u8; 8 << 20]);
        // Refused ones are closed while this is still being written.
        let _ = c.try_send_raw(&start).await;
        tricklers.push(c);
    }
    // 3. Subscribers with unlimited credit that never read.
    let mut stuck = Vec::new();
    for _ in 0..8 {
        let mut c = RawConn::connect(addr).await;
        c.hello().await;
        c.send(&Request::Subscribe(Subscribe {
            target: SubscriptionTarget::All {
                from: SubscribeFrom::Start,
                filter: None,
            },
            initial_credit: u32::MAX,
        }))
        .await;
        stuck.push(c);
    }
    // 4. A flood of reads whose replies are never read.
    let mut flood = Vec::new();
    for _ in 0..4 {
        let mut c = RawConn::connect(addr).await;
        c.hello().await;
        let mut reqs = BytesMut::new();
        for id in 1..=20_000u32 {
            let r = if id % 2 == 0 {
                Request::Ping(Ping { nonce: 1 })
            } else {
                Request::ReadAll(ReadAll {
                    from: None,
                    direction: logbook_protocol::Direction::Forward,
                    max_count: 200,
                })
            };
            r.encode(&mut reqs, id, 1 << 20).unwrap();
        }
        flood.push(tokio::spawn(async move {
            // Stalls once the server stops reading this connection.
            let _ = c.try_send_raw(&reqs).await;
            std::future::pending::<()>().await;
        }));
    }
    // Keep the log growing under the stuck subscribers, and measure the
    // good client while all of this goes on.
    for i in 0..2000u128 {
        let e = NewEvent::new(EventId::from_u128(2 << 100 | i), "Big", vec![b'y'; 4096]);
        good.append("big", ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    let (hostile_p50, hostile_p99) = good_client_latency(&good, 200, 2).await;

    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    // The bound: what the daemon held before, plus the budget for frames in
    // progress (256 MiB), plus unsent replies (4 MiB per connection, 256 MiB
    // for all), plus 64 MiB for everything else (buffers, allocator slack).
    // Here 16 tricklers hold 8 MiB each, far below the frame budget.
    let bound = baseline + (256 << 20) + (256 << 20) + (64 << 20);
    eprintln!(
        "hostile: baseline RSS {} MiB, peak {} MiB (bound {} MiB); 300 idle connections, 20 trickled 16 MiB frames (4 refused by the budget), 8 stuck subscribers, 4 flooders x 20,000 requests; good client p50/p99 {:?}/{:?} before, {:?}/{:?} during",
        baseline >> 20,
        peak >> 20,
        bound >> 20,
        base_p50,
        base_p99,
        hostile_p50,
        hostile_p99
    );
    assert!(peak < bound, "peak RSS {peak} over the bound {bound}");
    // Every trickler ends with a clear error: the 4 past the frame budget
    // at once (ServerBusy), the others when their frame times out.
    let mut busy = 0;
    for c in &mut tricklers {
        match c.recv().await {
            Some(logbook_protocol::ServerMessage::Error(e))
                if e.code == logbook_protocol::ErrorCode::ServerBusy =>
            {
                busy += 1
            }
            Some(logbook_protocol::ServerMessage::Error(e)) => {
                assert!(e.message.contains("frame timeout"), "{e:?}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(busy, 4, "frames past the 256 MiB budget are refused");
    for f in flood {
        f.abort();
    }
    drop((idle, tricklers, stuck));
    daemon.kill();
}
