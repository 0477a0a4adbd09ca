//! The reader pool: every read of the log that needs the disk runs here,
//! on blocking threads, at most `read_threads` at once, never on the async
//! runtime's threads. A read of cold history waits for the disk; on a
//! runtime thread it would stall every connection that thread serves (with
//! two cores, half of the server). A read is first tried on the calling
//! thread with reads that take only what the page cache holds
//! (`logbook_storage::fs::without_waiting`); only if something is missing
//! does it move here. Sending every read here cost cached reads a thread
//! hop each: W4's short reads fell from 44,900 to 20,900 a second, and live
//! delivery's p99 went from 0.045 to 0.24 ms.
//!
//! The bound on concurrent reads is also a bound on memory: a read may
//! return one event past the byte budget its caller reserved (an event is
//! never split), so at most `read_threads` events of `max_event_bytes`
//! (plus one per network thread, for cached reads) are ever unaccounted (RELIABILITY.md, "Hostile clients and bounded
//! memory").

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Runs reads on blocking threads, a bounded number at once.
///
/// Subscriptions' catch-up steps hold a [`ReadPool::background_share`]
/// slot, at most half the pool (at least one): a request's read waits
/// behind at most that many of theirs, however many subscriptions are
/// catching up (5,000 new subscriptions each read once when they start).
#[derive(Debug)]
pub(crate) struct ReadPool {
    permits: Arc<Semaphore>,
    background: Arc<Semaphore>,
}

impl ReadPool {
    /// A pool running at most `threads` reads at once (at least one).
    pub(crate) fn new(threads: usize) -> ReadPool {
        let threads = threads.max(1);
        ReadPool {
            permits: Arc::new(Semaphore::new(threads)),
            background: Arc::new(Semaphore::new((threads / 2).max(1))),
        }
    }

    /// A slot of the subscriptions' share of the pool, held by a catch-up
    /// step for its reads (taken before its outbox room, so that steps
    /// waiting for a reader do not hold room meanwhile).
    pub(crate) async fn background_share(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        // The semaphore is never closed.
        Arc::clone(&self.background).acquire_owned().await.ok()
    }

    /// Runs `read` here if the page cache holds all it reads, else on a
    /// blocking thread once a slot is free, and returns its result. A panic
    /// in `read` is resumed here.
    pub(crate) async fn run<T, F>(&self, read: F) -> T
    where
        T: Send + 'static,
        F: Fn() -> T + Send + 'static,
    {
        if let Some(v) = logbook_storage::fs::without_waiting(&read) {
            return v;
        }
        self.blocking(read).await
    }

    /// Runs `read` on a blocking thread once a slot is free (for a caller
    /// that already found the page cache short).
    pub(crate) async fn blocking<T, F>(&self, read: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        // The semaphore is never closed.
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            read()
        });
        match task.await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// However many reads that need the disk are asked for at once, no
    /// more than the pool's size run together, and every one runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_run_a_bounded_number_at_once() {
        let pool = Arc::new(ReadPool::new(3));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..40usize {
            let (pool, running, most) =
                (Arc::clone(&pool), Arc::clone(&running), Arc::clone(&most));
            tasks.push(tokio::spawn(async move {
                pool.blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Hold the slot long enough for the others to pile up.
                    std::thread::yield_now();
                    running.fetch_sub(1, Ordering::SeqCst);
                    i * 2
                })
                .await
            }));
        }
        let mut sum = 0;
        for t in tasks {
            sum += t.await.unwrap();
        }
        assert_eq!(sum, (0..40).map(|i| i * 2).sum::<usize>());
        assert!(most.load(Ordering::SeqCst) <= 3);
    }
}
