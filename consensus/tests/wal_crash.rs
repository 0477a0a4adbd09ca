//! The Raft log under power cuts: random appends, votes, truncations and
//! purges on the fault-injecting file system, cut at random moments with
//! unsynced writes dropped, reordered or torn; after each cut the log
//! reopens (a torn tail is never refused) and holds every append it
//! reported flushed and every vote it saved, contiguously, and nothing that
//! was never appended. Damage to synced bytes is refused, not cut.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::Rng;
use logbook_consensus::TypeConfig;
use logbook_consensus::wal::{FILE, Wal};
use logbook_storage::fs::{CrashMode, MemFs};
use openraft::RaftLogReader;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;

type C = TypeConfig;
type LogId = openraft::alias::LogIdOf<C>;
type Entry = openraft::alias::EntryOf<C>;
type Vote = openraft::alias::VoteOf<C>;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 },
        index,
    )
}

/// Rewrites past this many bytes, or never in these tests' sizes.
static COMPACT_AT: AtomicU64 = AtomicU64::new(u64::MAX);

fn open(fs: &MemFs) -> Wal {
    let at = COMPACT_AT.load(Ordering::Relaxed);
    Wal::open_compacting_at(Arc::new(fs.clone()), Path::new("/raft"), at).expect("the log reopens")
}

async fn contents(wal: &mut Wal) -> (Option<LogId>, BTreeMap<u64, LogId>, Option<Vote>) {
    let state = wal.get_log_state().await.unwrap();
    let mut reader = wal.get_log_reader().await;
    let entries = reader.try_get_log_entries(0..).await.unwrap();
    let vote = reader.read_vote().await.unwrap();
    (
        state.last_purged_log_id,
        entries.iter().map(|e| (e.index(), e.log_id())).collect(),
        vote,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_keep_what_was_flushed() {
    // Without rewrites, then with the file rewritten whenever it passes
    // 2 KiB (and twice what is live): power cuts land before, during and
    // after rewrites too.
    for compact_at in [u64::MAX, 2048] {
        COMPACT_AT.store(compact_at, Ordering::Relaxed);
        power_cuts(compact_at).await;
    }
}

async fn power_cuts(compact_at: u64) {
    for seed in 1..=24u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut fs = MemFs::new();
        let mut wal = open(&fs);
        // What must survive: entries reported flushed, by index.
        let mut acked: BTreeMap<u64, LogId> = BTreeMap::new();
        // Every log id ever appended at each index.
        let mut ever: BTreeMap<u64, BTreeSet<LogId>> = BTreeMap::new();
        let mut vote: Option<Vote> = None;
        let mut next = 0u64;
        let mut term = 1u64;
        let mut purged = 0u64;
        for _step in 0..300 {
            match rng.below(10) {
                0..=4 => {
                    let n = 1 + rng.below(4);
                    let entries: Vec<Entry> = (next..next + n)
                        .map(|i| Entry::new_blank(log_id(term, i)))
                        .collect();
                    for e in &entries {
                        ever.entry(e.index()).or_default().insert(e.log_id());
                    }
                    let (tx, rx) = C::oneshot();
                    wal.append(entries.clone(), IOFlushed::signal(tx))
                        .await
                        .unwrap();
                    if rng.below(2) == 0 {
                        rx.await.unwrap().unwrap();
                        // Flushed: it and, by the log's order, everything
                        // before it.
                        for e in entries {
                            acked.insert(e.index(), e.log_id());
                        }
                    }
                    next += n;
                }
                5 => {
                    term += 1;
                    let v = Vote::new(term, 1);
                    wal.save_vote(&v).await.unwrap();
                    vote = Some(v);
                }
                6 if next > purged + 2 => {
                    // A new leader overwrites an unacknowledged suffix.
                    let keep = purged + rng.below(next - purged);
                    let last = (keep > 0).then(|| log_id(term, keep - 1));
                    let last = last.map(|_| {
                        // The id of the entry kept at keep - 1.
                        *ever[&(keep - 1)].iter().next_back().unwrap()
                    });
                    wal.truncate_after(last).await.unwrap();
                    acked.split_off(&keep);
                    next = keep;
                    term += 1;
                }
                7 if next > purged + 4 => {
                    let upto = purged + rng.below(next - purged - 2);
                    let id = *ever[&upto].iter().next_back().unwrap();
                    wal.purge(id).await.unwrap();
                    purged = upto + 1;
                }
                8 => {
                    // The power goes.
                    let mode = if rng.below(2) == 0 {
                        CrashMode::DropUnsynced
                    } else {
                        CrashMode::TornUnsynced {
                            seed: rng.below(u64::MAX),
                        }
                    };
                    fs = fs.crash(mode);
                    drop(wal);
                    wal = open(&fs);
                    let (rpurged, entries, rvote) = contents(&mut wal).await;
                    assert_eq!(
                        rvote, vote,
                        "seed {seed}/{compact_at}: the last saved vote survives"
                    );
                    let first = rpurged.map_or(0, |p| p.index() + 1);
                    for (i, id) in &acked {
                        if *i >= first {
                            assert_eq!(
                                entries.get(i),
                                Some(id),
                                "seed {seed}: flushed entry {i} survives"
                            );
                        }
                    }
                    let mut expect = first;
                    for (i, id) in &entries {
                        assert_eq!(*i, expect, "seed {seed}: no holes");
                        assert!(ever[i].contains(id), "seed {seed}: {i} was appended");
                        expect += 1;
                    }
                    // What came back is now the log: on disk, in order.
                    acked = entries;
                    next = expect;
                    purged = first;
                }
                _ => {
                    // Wait until everything queued is durable.
                    let v = vote.unwrap_or_else(|| Vote::new(term, 1));
                    wal.save_vote(&v).await.unwrap();
                    vote = Some(v);
                    let (_, entries, _) = contents(&mut wal).await;
                    acked = entries;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_synced_records_are_refused_not_cut() {
    let fs = MemFs::new();
    let mut wal = open(&fs);
    for i in 0..10 {
        let (tx, rx) = C::oneshot();
        wal.append(vec![Entry::new_blank(log_id(1, i))], IOFlushed::signal(tx))
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
    }
    drop(wal);
    let path = Path::new("/raft").join(FILE);
    let good = fs.read_file(&path).unwrap();
    // A bit flipped in the first batch, which later batches follow.
    let mut bad = good.clone();
    bad[12] ^= 0x10;
    fs.write_file(&path, bad);
    let e = Wal::open(Arc::new(fs.clone()), Path::new("/raft"))
        .err()
        .expect("damage is refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("rejoin"), "{e}");
    // The same flip in the last batch is a torn tail: cut, the rest kept.
    let mut torn = good.clone();
    let n = torn.len();
    torn[n - 3] ^= 0x10;
    fs.write_file(&path, torn);
    let mut wal = open(&fs);
    let (_, entries, _) = contents(&mut wal).await;
    assert_eq!(entries.len(), 9);
}
