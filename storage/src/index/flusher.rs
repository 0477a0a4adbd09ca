//! The index's background threads: the flusher writes frozen memtables to
//! `.sidx` tables; the merger merges tables. Off the writer's path, and off
//! each other's: a flush never waits behind a merge (a merge of large
//! tables can take minutes, and memtables waiting for a flush are memory).
//!
//! Each step is made durable before it becomes visible: write the table,
//! fsync it, sync the directory, store the MANIFEST (atomically), and only
//! then swap the table in under the index lock. The MANIFEST lock is held
//! only for that last part, by either thread: each builds the next MANIFEST
//! from the current one (a flush adds a table at the newest end, a merge
//! replaces its run, wherever the run is by then). Old tables are deleted
//! after the MANIFEST that drops them is durable; readers still holding
//! them keep reading them (`file_cache` keeps such files open).
//!
//! Merging is tiered: a run of `MERGE_FANIN` consecutive tables of one
//! level becomes one table of the next level, the oldest such run first.
//! Tables stay ordered by log position (a merge replaces a contiguous
//! run), and levels never rise from older to newer tables (flushes add
//! level 0 at the newest end; the oldest run of a level has a higher level
//! before it), so each level holds at most `MERGE_FANIN - 1` tables once
//! merges catch up: a lookup touches few tables and bloom filters skip the
//! rest. (Merging the newest run first while flushes went on could leave
//! an older table of a lower level between higher ones, where no run would
//! ever take it.)
//!
//! Backpressure ([`Pressure`]): if flushes fall behind, frozen memtables
//! pile up in memory; if merges do, tables pile up and every lookup probes
//! more of them. The writer asks [`Shared::index_pressure`] before each
//! group: past the slow-down marks it waits a little per group, more the
//! further past; at the stop marks it waits until the threads catch up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::StorageError;
use crate::index::memtable::Memtable;
use crate::index::table::{self, Table};
use crate::index::{ids, names};
use crate::shared::Shared;
use logbook_protocol::layout;

/// Tables of one level merged at a time.
pub const MERGE_FANIN: usize = 4;

/// Frozen memtables waiting at which appends slow down (one being written
/// and one more waiting is normal under load).
pub const SLOW_FROZEN: usize = 3;
/// Frozen memtables at which appends wait for the flusher.
pub const STOP_FROZEN: usize = 6;
/// Tables at which appends slow down. Tiered merging keeps about
/// `(MERGE_FANIN - 1)` tables per level: 15 for a billion events.
pub const SLOW_TABLES: usize = 40;
/// Tables at which appends wait for the merger.
pub const STOP_TABLES: usize = 80;

/// What the state of the index asks of the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pressure {
    /// Go on.
    None,
    /// Wait this long before the next group.
    Slow(Duration),
    /// Wait for the flusher or the merger to make progress.
    Stop,
}

impl Pressure {
    /// The pressure of `frozen` memtables and `tables` tables.
    pub fn of(frozen: usize, tables: usize) -> Pressure {
        if frozen >= STOP_FROZEN || tables >= STOP_TABLES {
            return Pressure::Stop;
        }
        // 200 µs per memtable from the mark, 50 µs per table: a few per cent
        // of a group commit at first, a crawl near the stop marks.
        let from = |n: usize, mark: usize| n.checked_sub(mark).map_or(0, |d| d as u64 + 1);
        match from(frozen, SLOW_FROZEN) * 200 + from(tables, SLOW_TABLES) * 50 {
            0 => Pressure::None,
            us => Pressure::Slow(Duration::from_micros(us)),
        }
    }
}

/// The flusher thread: flushes whenever signalled, until the channel
/// closes; after a failure, again after a backoff even without a signal
/// (the writer may be waiting for it).
pub(crate) fn run_flusher(
    shared: Arc<Shared>,
    rx: std::sync::mpsc::Receiver<()>,
    merge_tx: std::sync::mpsc::Sender<()>,
) {
    background(&shared, rx, "index flush", |s| {
        flush_frozen(s, &|| {
            let _ = merge_tx.send(());
        })
    });
}

/// The merger thread: merges whenever signalled, until the channel closes.
pub(crate) fn run_merger(shared: Arc<Shared>, rx: std::sync::mpsc::Receiver<()>) {
    background(&shared, rx, "index merge", merge);
}

/// Runs `step` at each signal, and after a failure again after a backoff
/// (100 ms doubling to 5 s) until it succeeds; the writer is woken after
/// each step.
fn background(
    shared: &Shared,
    rx: std::sync::mpsc::Receiver<()>,
    what: &str,
    step: impl Fn(&Shared) -> Result<(), StorageError>,
) {
    let mut backoff: Option<Duration> = None;
    loop {
        let signalled = match backoff {
            None => rx.recv().map_err(|_| ()),
            Some(d) => match rx.recv_timeout(d) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(()),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(()),
            },
        };
        if signalled.is_err() {
            return;
        }
        while rx.try_recv().is_ok() {}
        match step(shared) {
            Ok(()) => backoff = None,
            Err(StorageError::ShuttingDown) => return,
            Err(e) => {
                // What was not written stays readable in memory (frozen
                // memtables) or in the tables it would have replaced.
                let d = backoff.map_or(Duration::from_millis(100), |d| {
                    (d * 2).min(Duration::from_secs(5))
                });
                tracing::error!(error = %e, retry_in = ?d, "{what} failed; will retry");
                shared
                    .counters
                    .index_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                backoff = Some(d);
            }
        }
        shared.index_progressed();
    }
}

/// Removes the files of table `id`, which no MANIFEST lists: its write
/// failed or was abandoned at close (table ids are taken once, so nothing
/// else would; a crash's leftovers are removed by the next start).
fn remove_stale(shared: &Shared, id: u64) {
    for path in [
        shared.index_dir.join(layout::table_file(id)),
        shared.index_dir.join(layout::ids_file(id)),
    ] {
        if shared.config.vfs.exists(&path) {
            let _ = shared.config.vfs.remove_file(&path);
        }
    }
}

/// A table id never used before (the MANIFEST stored next records it).
fn take_table_id(shared: &Shared) -> u64 {
    let mut m = shared.manifest.lock();
    let id = m.next_table_id;
    m.next_table_id += 1;
    id
}

/// Writes every frozen memtable to a table, oldest first, calling
/// `flushed` after each.
pub(crate) fn flush_frozen(shared: &Shared, flushed: &dyn Fn()) -> Result<(), StorageError> {
    // One flush at a time: serialises the background thread with the final
    // flush at shutdown.
    let _flushing = shared.flushing.lock();
    let mut flushed_any = false;
    loop {
        let Some(mem) = shared.index.read().frozen.first().cloned() else {
            // Derived data: a failure costs a longer rebuild at the next
            // start, not the flush. Written when a state changed, or when
            // the next start would otherwise read more than 8 memtables'
            // worth of log for lifecycle events.
            if flushed_any
                && lifecycle_due(shared)
                && let Err(e) = store_lifecycle(shared)
            {
                tracing::warn!(error = %e, "could not write the lifecycle snapshot");
            }
            return Ok(());
        };
        flushed_any = true;
        let id = take_table_id(shared);
        flush_one(shared, &mem, id).inspect_err(|_| remove_stale(shared, id))?;
        shared.indexed_through.store(mem.end, Ordering::Release);
        shared.counters.flushes.fetch_add(1, Ordering::Relaxed);
        shared.index_progressed();
        flushed();
    }
}

/// Writes the lifecycle snapshot, so that the next start reads the log
/// for lifecycle events only from about here (see `lifecycle`).
pub(crate) fn store_lifecycle(shared: &Shared) -> Result<(), StorageError> {
    let l = &shared.lifecycle;
    let generation = l.generation.load(Ordering::Acquire);
    // Loaded first: every group below it is in the map whole.
    let through = l.noted_through.load(Ordering::Acquire).min(shared.head());
    l.store_snapshot(&*shared.config.vfs, &shared.index_dir, through, || {
        shared.head()
    })?;
    *l.written.lock() = (generation, through);
    Ok(())
}

/// Whether the lifecycle snapshot is worth writing now (see
/// `flush_frozen`).
fn lifecycle_due(shared: &Shared) -> bool {
    let l = &shared.lifecycle;
    let (generation, through) = *l.written.lock();
    generation != l.generation.load(Ordering::Acquire)
        || shared.head().saturating_sub(through) >= 8 * shared.config.index_flush_entries as u64
}

/// Writes `mem` as table `id`, then puts the table in the MANIFEST and the
/// index in place of the memtable.
fn flush_one(shared: &Shared, mem: &Arc<Memtable>, id: u64) -> Result<(), StorageError> {
    let vfs = &*shared.config.vfs;
    let event_ids = mem.ids.sorted();
    let ids = ids::write(
        vfs,
        &shared.index_dir,
        id,
        mem.start,
        mem.end,
        event_ids.len() as u64,
        event_ids.into_iter().map(Ok),
        |k| shared.hasher.hash_id(k),
    )?;
    let entries = mem.sorted_entries();
    let names = mem.new_stream_names().map(|n| Ok(n.to_owned()));
    let table = table::write_format(
        shared
            .config
            .testing
            .table_format
            .unwrap_or(table::FORMAT_VERSION),
        vfs,
        &shared.index_dir,
        id,
        0,
        (mem.start, mem.end),
        entries.len() as u64,
        entries.into_iter().map(Ok),
        names,
        ids,
    )?;
    vfs.sync_dir(&shared.index_dir)
        .map_err(|e| StorageError::io("sync dir", &shared.index_dir, e))?;
    let mut manifest = shared.manifest.lock();
    let mut next = manifest.clone();
    next.tables.push(id);
    next.indexed_through = mem.end;
    let streams = next.streams.unwrap_or(0) + mem.new_streams();
    next.streams = Some(streams);
    next.store(vfs, &shared.index_dir)?;
    *manifest = next;
    let mut g = shared.index.write();
    let mut tables = Vec::clone(&g.tables);
    tables.push(Arc::new(table));
    g.tables = Arc::new(tables);
    if g.frozen.first().is_some_and(|m| Arc::ptr_eq(m, mem)) {
        g.frozen.remove(0);
    }
    shared.note_index_shape(&g);
    g.indexed_streams = streams;
    g.manifest = Arc::new(manifest.clone());
    Ok(())
}

/// The oldest run of `MERGE_FANIN` consecutive tables of one level; or, if
/// there is none but tables are piling up anyway (levels out of order: a
/// store shaped otherwise by an earlier build), the `MERGE_FANIN`
/// consecutive tables with the fewest entries, so that the writer is never
/// left waiting at the stop mark with nothing to merge.
fn pick_run(tables: &[Arc<Table>]) -> Option<Vec<Arc<Table>>> {
    let shape: Vec<(u32, u64)> = tables.iter().map(|t| (t.level, t.entry_count)).collect();
    let at = pick(&shape)?;
    tables.get(at..at + MERGE_FANIN).map(<[_]>::to_vec)
}

/// [`pick_run`] over `(level, entries)` of each table: where the run
/// starts.
fn pick(tables: &[(u32, u64)]) -> Option<usize> {
    let same_level = tables
        .windows(MERGE_FANIN)
        .position(|run| run.first().is_some_and(|f| run.iter().all(|t| t.0 == f.0)));
    match same_level {
        Some(at) => Some(at),
        None if tables.len() >= SLOW_TABLES => tables
            .windows(MERGE_FANIN)
            .enumerate()
            .min_by_key(|(_, run)| run.iter().map(|t| t.1).sum::<u64>())
            .map(|(at, _)| at),
        None => None,
    }
}

/// Merges runs until none is left (or the store closes).
fn merge(shared: &Shared) -> Result<(), StorageError> {
    loop {
        let tables = Arc::clone(&shared.index.read().tables);
        let Some(run) = pick_run(&tables) else {
            return Ok(());
        };
        drop(tables);
        let id = take_table_id(shared);
        merge_run(shared, &run, id).inspect_err(|_| remove_stale(shared, id))?;
        shared.index_progressed();
    }
}

/// Passes entries on until the store closes: a merge in progress is then
/// abandoned (and its file removed), so that closing never waits for a
/// long merge.
fn unless_closing<T>(
    shared: &Shared,
) -> impl Fn(Result<T, StorageError>) -> Result<T, StorageError> + '_ {
    move |entry| {
        if shared.closing.load(Ordering::Relaxed) {
            Err(StorageError::ShuttingDown)
        } else {
            entry
        }
    }
}

/// Merges `run` into table `id`, then puts it in the MANIFEST and the index
/// in place of the run.
fn merge_run(shared: &Shared, run: &[Arc<Table>], id: u64) -> Result<(), StorageError> {
    let closing = || shared.closing.load(Ordering::Relaxed);
    if let Some(gate) = &shared.config.testing.merge_gate {
        gate.pass(closing);
    }
    let vfs = &*shared.config.vfs;
    // Whether lookups have been reading the run's summaries (before the
    // merge reads them itself): with random ids every append probes every
    // table's id bloom, and the merged table's is better kept than read
    // again on an appender's thread; with time-ordered ids old tables are
    // never probed, and the merged one starts cold.
    let ids_warm = run.iter().any(|t| t.ids.is_warm());
    let fences_warm = run.iter().any(|t| t.is_warm());
    let level = run.iter().map(|t| t.level).max().unwrap_or(0);
    let start = run.first().map(|t| t.start_position).unwrap_or(0);
    let end = run.last().map(|t| t.end_position).unwrap_or(0);
    let count: u64 = run.iter().map(|t| t.entry_count).sum();
    let id_count: u64 = run.iter().map(|t| t.ids.count).sum();
    let merged_ids = ids::write(
        vfs,
        &shared.index_dir,
        id,
        start,
        end,
        id_count,
        ids::merge_iters(run.iter().map(|t| t.ids.iter()).collect()).map(unless_closing(shared)),
        |k| shared.hasher.hash_id(k),
    )?
    .warm_if(ids_warm);
    let merged = table::write_format(
        shared
            .config
            .testing
            .table_format
            .unwrap_or(table::FORMAT_VERSION),
        vfs,
        &shared.index_dir,
        id,
        level + 1,
        (start, end),
        count,
        table::merge_iters(run.iter().map(|t| t.iter()).collect()).map(unless_closing(shared)),
        names::merge(run.iter().map(|t| t.names_from("")).collect()).map(unless_closing(shared)),
        merged_ids,
    )?
    .warm_if(fences_warm);
    vfs.sync_dir(&shared.index_dir)
        .map_err(|e| StorageError::io("sync dir", &shared.index_dir, e))?;
    let run_ids: Vec<u64> = run.iter().map(|t| t.id).collect();
    {
        let mut manifest = shared.manifest.lock();
        // Only the merger removes tables and flushes only add at the newest
        // end, so the run is still there, contiguous.
        let at = manifest
            .tables
            .windows(MERGE_FANIN)
            .position(|w| w == run_ids.as_slice())
            .ok_or_else(|| StorageError::Internal("merged run left the manifest".into()))?;
        // The index lists the same tables (it changes only under this
        // lock): checked before the MANIFEST changes, so they never differ.
        let same = shared
            .index
            .read()
            .tables
            .get(at..at + MERGE_FANIN)
            .is_some_and(|w| w.iter().zip(run).all(|(a, b)| Arc::ptr_eq(a, b)));
        if !same {
            return Err(StorageError::Internal("merged run left the index".into()));
        }
        let mut next = manifest.clone();
        next.tables.splice(at..at + MERGE_FANIN, [id]);
        next.store(vfs, &shared.index_dir)?;
        *manifest = next;
        let mut g = shared.index.write();
        let mut tables = Vec::clone(&g.tables);
        tables.splice(at..at + MERGE_FANIN, [Arc::new(merged)]);
        g.tables = Arc::new(tables);
        g.manifest = Arc::new(manifest.clone());
        shared.note_index_shape(&g);
    }
    for path in run.iter().flat_map(|t| [&t.path, &t.ids.path]) {
        if let Err(e) = vfs.remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove merged index file");
        }
    }
    shared.counters.merges.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flushes go on while merges run, each merge taking its run at the
    /// start and replacing it at the end, however many flushes came in
    /// between: levels never rise from older to newer tables, and once
    /// merges catch up at most `MERGE_FANIN - 1` tables share a level.
    #[test]
    fn tiers_stay_ordered_whatever_the_merges_take() {
        let mut x = 0x5eedu64;
        let mut rand = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..200 {
            // (level, entries, id) of each table, oldest first.
            let mut tables: Vec<(u32, u64, u64)> = Vec::new();
            let mut next_id = 0u64;
            // The merge in progress: the ids of its run.
            let mut merging: Option<Vec<u64>> = None;
            for _ in 0..400 {
                if rand(3) > 0 || merging.is_none() {
                    tables.push((0, 16, next_id));
                    next_id += 1;
                }
                if let Some(run) = merging.take_if(|_| rand(4) == 0) {
                    let at = tables.iter().position(|t| t.2 == run[0]).unwrap();
                    let got: Vec<u64> = tables[at..at + MERGE_FANIN].iter().map(|t| t.2).collect();
                    assert_eq!(got, run, "the run is still there, contiguous");
                    let level = tables[at..at + MERGE_FANIN]
                        .iter()
                        .map(|t| t.0)
                        .max()
                        .unwrap();
                    let entries = tables[at..at + MERGE_FANIN].iter().map(|t| t.1).sum();
                    tables.splice(at..at + MERGE_FANIN, [(level + 1, entries, next_id)]);
                    next_id += 1;
                }
                if merging.is_none() {
                    let shape: Vec<(u32, u64)> = tables.iter().map(|t| (t.0, t.1)).collect();
                    merging = pick(&shape)
                        .map(|at| tables[at..at + MERGE_FANIN].iter().map(|t| t.2).collect());
                }
                assert!(
                    tables.windows(2).all(|w| w[0].0 >= w[1].0),
                    "levels rise: {tables:?}"
                );
            }
            // Merges catch up.
            loop {
                if let Some(run) = merging.take() {
                    let at = tables.iter().position(|t| t.2 == run[0]).unwrap();
                    let level = tables[at].0;
                    let entries = tables[at..at + MERGE_FANIN].iter().map(|t| t.1).sum();
                    tables.splice(at..at + MERGE_FANIN, [(level + 1, entries, next_id)]);
                    next_id += 1;
                }
                let shape: Vec<(u32, u64)> = tables.iter().map(|t| (t.0, t.1)).collect();
                match pick(&shape) {
                    Some(at) => {
                        merging = Some(tables[at..at + MERGE_FANIN].iter().map(|t| t.2).collect());
                    }
                    None => break,
                }
            }
            for level in 0..20 {
                let n = tables.iter().filter(|t| t.0 == level).count();
                assert!(n < MERGE_FANIN, "{n} tables at level {level}: {tables:?}");
            }
            assert!(tables.len() < SLOW_TABLES);
        }
    }

    #[test]
    fn tables_out_of_order_are_merged_anyway_once_they_pile_up() {
        // Alternating levels: no run of one level.
        let shape: Vec<(u32, u64)> = (0..SLOW_TABLES as u64)
            .map(|i| ((i % 2) as u32, 100 + i))
            .collect();
        assert_eq!(pick(&shape[..SLOW_TABLES - 1]), None, "not piling up yet");
        assert_eq!(pick(&shape), Some(0), "the cheapest four");
    }

    #[test]
    fn pressure_rises_gradually_then_stops() {
        assert_eq!(Pressure::of(0, 0), Pressure::None);
        assert_eq!(
            Pressure::of(SLOW_FROZEN - 1, SLOW_TABLES - 1),
            Pressure::None
        );
        let mut last = Duration::ZERO;
        for frozen in SLOW_FROZEN..STOP_FROZEN {
            let Pressure::Slow(d) = Pressure::of(frozen, 0) else {
                panic!("{frozen} frozen")
            };
            assert!(d > last, "more frozen memtables, a longer wait");
            last = d;
        }
        assert_eq!(Pressure::of(STOP_FROZEN, 0), Pressure::Stop);
        let mut last = Duration::ZERO;
        for tables in SLOW_TABLES..STOP_TABLES {
            let Pressure::Slow(d) = Pressure::of(0, tables) else {
                panic!("{tables} tables")
            };
            assert!(d > last);
            last = d;
        }
        assert_eq!(Pressure::of(0, STOP_TABLES), Pressure::Stop);
    }
}
