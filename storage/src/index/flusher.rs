//! The index flusher: a background thread that writes frozen memtables to
//! `.sidx` tables and merges tables, off the writer's path.
//!
//! Each step is made durable before it becomes visible: write the table,
//! fsync it, sync the directory, store the MANIFEST (atomically), and only
//! then swap the table in for the memtable under the index lock. Old tables
//! are deleted after the MANIFEST that drops them is durable; readers still
//! holding them keep their open file.
//!
//! Merging is tiered: when the newest `MERGE_FANIN` tables share a level,
//! they become one table of the next level. Tables stay ordered by log
//! position (a merge replaces a contiguous run), so a lookup touches few
//! tables and bloom filters skip the rest.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::StorageError;
use crate::index::ids;
use crate::index::manifest::Manifest;
use crate::index::table::{self, Table};
use crate::shared::Shared;
use logbook_protocol::layout;

/// Tables of one level merged at a time.
pub const MERGE_FANIN: usize = 4;

/// Runs until the channel closes, flushing whenever signalled.
pub(crate) fn run(shared: Arc<Shared>, rx: std::sync::mpsc::Receiver<()>) {
    while rx.recv().is_ok() {
        while rx.try_recv().is_ok() {}
        if let Err(e) = flush_frozen(&shared) {
            // The frozen memtables stay readable in memory; the next signal
            // (or shutdown) retries.
            tracing::error!(error = %e, "index flush failed; will retry");
        }
    }
}

fn remove_stale(shared: &Shared, id: u64) {
    for path in [
        shared.index_dir.join(layout::table_file(id)),
        shared.index_dir.join(layout::ids_file(id)),
    ] {
        if shared.config.vfs.exists(&path) {
            // Not in the manifest (ids are only reused after a failed
            // attempt), so nothing refers to it.
            let _ = shared.config.vfs.remove_file(&path);
        }
    }
}

/// Writes every frozen memtable to a table, oldest first, then merges.
pub(crate) fn flush_frozen(shared: &Shared) -> Result<(), StorageError> {
    // One flusher at a time: the manifest lock serialises the background
    // thread with the final flush at shutdown.
    let mut manifest = shared.manifest.lock();
    loop {
        let Some(mem) = shared.index.read().frozen.first().cloned() else {
            break;
        };
        let vfs = &*shared.config.vfs;
        let id = manifest.next_table_id;
        remove_stale(shared, id);
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
        let table = table::write(
            vfs,
            &shared.index_dir,
            id,
            0,
            mem.start,
            mem.end,
            entries.len() as u64,
            entries.into_iter().map(Ok),
            ids,
        )?;
        vfs.sync_dir(&shared.index_dir)
            .map_err(|e| StorageError::io("sync dir", &shared.index_dir, e))?;
        let mut next = manifest.clone();
        next.tables.push(id);
        next.next_table_id = id + 1;
        next.indexed_through = mem.end;
        let streams = next.streams.unwrap_or(0) + mem.new_streams();
        next.streams = Some(streams);
        next.store(vfs, &shared.index_dir)?;
        *manifest = next;
        {
            let mut g = shared.index.write();
            let mut tables = Vec::clone(&g.tables);
            tables.push(Arc::new(table));
            g.tables = Arc::new(tables);
            if g.frozen.first().is_some_and(|m| Arc::ptr_eq(m, &mem)) {
                g.frozen.remove(0);
            }
            g.indexed_streams = streams;
            g.manifest = Arc::new(manifest.clone());
        }
        shared.indexed_through.store(mem.end, Ordering::Release);
        shared.counters.flushes.fetch_add(1, Ordering::Relaxed);
        merge(shared, &mut manifest)?;
    }
    Ok(())
}

/// Merges runs of `MERGE_FANIN` same-level tables at the newest end.
fn merge(shared: &Shared, manifest: &mut Manifest) -> Result<(), StorageError> {
    loop {
        let tables = Arc::clone(&shared.index.read().tables);
        let n = tables.len();
        if n < MERGE_FANIN {
            return Ok(());
        }
        let run: Vec<Arc<Table>> = tables.iter().skip(n - MERGE_FANIN).cloned().collect();
        let level = run.first().map(|t| t.level).unwrap_or(0);
        if run.iter().any(|t| t.level != level) {
            return Ok(());
        }
        let vfs = &*shared.config.vfs;
        let id = manifest.next_table_id;
        remove_stale(shared, id);
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
            ids::merge_iters(run.iter().map(|t| t.ids.iter()).collect()),
            |k| shared.hasher.hash_id(k),
        )?;
        let merged = table::write(
            vfs,
            &shared.index_dir,
            id,
            level + 1,
            start,
            end,
            count,
            table::merge_iters(run.iter().map(|t| t.iter()).collect()),
            merged_ids,
        )?;
        vfs.sync_dir(&shared.index_dir)
            .map_err(|e| StorageError::io("sync dir", &shared.index_dir, e))?;
        let mut next = manifest.clone();
        next.tables
            .truncate(next.tables.len().saturating_sub(MERGE_FANIN));
        next.tables.push(id);
        next.next_table_id = id + 1;
        next.store(vfs, &shared.index_dir)?;
        *manifest = next;
        {
            let mut g = shared.index.write();
            let mut v: Vec<Arc<Table>> = g.tables.iter().take(n - MERGE_FANIN).cloned().collect();
            v.push(Arc::new(merged));
            // Tables added after our snapshot (none: only we add tables, and
            // we hold the manifest lock) would follow here.
            v.extend(g.tables.iter().skip(n).cloned());
            g.tables = Arc::new(v);
            g.manifest = Arc::new(manifest.clone());
        }
        for t in &run {
            if let Err(e) = vfs.remove_file(&t.path) {
                tracing::warn!(path = %t.path.display(), error = %e, "could not remove merged index table");
            }
        }
        shared.counters.merges.fetch_add(1, Ordering::Relaxed);
    }
}
