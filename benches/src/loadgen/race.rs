//! W6: clients racing on one stream with the same expected version.
//!
//! 16 clients (connections, tasks) share one fresh stream,
//! `loadgen-w6-<run id>`. A round: the tasks meet at a barrier, read the
//! round's expected version (`NoStream` in the first round, then
//! `Exact(v)` of the previous round's winner), each append one event with
//! it, and meet at a second barrier, whose leader tallies the round:
//!
//! - exactly one append must succeed;
//! - every other one must fail with `WrongExpectedVersion` whose `actual`
//!   is the winner's new version;
//! - nothing else may happen (any other error fails the round).
//!
//! A failed round stops the workload with [`Error::Check`] (the binary
//! then exits non-zero). Round latency is the time from one tally to the
//! next. At the end the stream must hold exactly one event per round.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use logbook_client::{AppendResult, Client, Error as ClientError, ExpectedVersion, Text};
use tokio::sync::Barrier;

use crate::events::EventFactory;
use crate::latency::Recorder;
use crate::loadgen::read::stream_len;
use crate::loadgen::report::{Row, Value, per_sec};
use crate::loadgen::{Error, Result, Settings, Window, connect};

/// What one append of a round came to.
#[derive(Debug)]
enum Outcome {
    Won(AppendResult),
    /// `WrongExpectedVersion`, with the actual version it reported.
    Lost(Option<logbook_client::StreamVersion>),
    /// Anything else.
    Failed(String),
}

/// State shared by the racers, behind a mutex never held across `.await`.
#[derive(Debug)]
struct Race {
    window: Window,
    /// What this round's appends expect.
    expected: ExpectedVersion,
    /// Rounds tallied so far (warm-up included).
    rounds: u64,
    /// This round's outcomes, one per client.
    outcomes: Vec<Outcome>,
    /// When the previous round was tallied.
    last_tally: Instant,
    /// Set by the tally to end the race (time is up, or a round failed).
    stop: bool,
    /// Why the race failed, if it did.
    failure: Option<String>,
    /// Measured rounds and their losers, and round latencies.
    measured_rounds: u64,
    conflicts: u64,
    latency: Recorder,
}

impl Race {
    /// Checks the round just run and prepares the next.
    fn tally(&mut self) {
        let now = Instant::now();
        let round = self.rounds;
        let outcomes = std::mem::take(&mut self.outcomes);
        let winners: Vec<&AppendResult> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Won(r) => Some(r),
                _ => None,
            })
            .collect();
        let problem = match winners.as_slice() {
            [winner] => {
                let want = Some(winner.last_version);
                outcomes.iter().find_map(|o| match o {
                    Outcome::Won(_) => None,
                    Outcome::Lost(actual) if *actual == want => None,
                    Outcome::Lost(actual) => Some(format!(
                        "a loser was told the stream is at {actual:?}, \
                         but the winner left it at {}",
                        winner.last_version
                    )),
                    Outcome::Failed(e) => Some(format!("an append failed: {e}")),
                })
            }
            many => Some(format!(
                "{} winners out of {} appends, expected exactly 1 \
                 (winners: {many:?}; all outcomes: {outcomes:?})",
                many.len(),
                outcomes.len()
            )),
        };
        if let Some(problem) = problem {
            self.failure = Some(format!(
                "W6 round {round} (expecting {}): {problem}",
                self.expected
            ));
            self.stop = true;
            return;
        }
        if let [winner] = winners.as_slice() {
            self.expected = ExpectedVersion::Exact(winner.last_version);
        }
        self.rounds += 1;
        if self.window.counts(now) {
            self.measured_rounds += 1;
            self.conflicts += outcomes.len() as u64 - 1;
            self.latency.record(now - self.last_tally);
        }
        self.last_tally = now;
        self.stop = self.window.over(now);
    }
}

fn lock(race: &Mutex<Race>) -> MutexGuard<'_, Race> {
    race.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs W6.
pub async fn run(settings: &Settings) -> Result<Row> {
    let n = settings.clients.unwrap_or(16).max(2);
    let clients = connect(settings, "w6", n).await?;
    let stream = Text::from(format!("loadgen-w6-{}", settings.run_id));
    let factory = Arc::new(EventFactory::new(settings.payload));
    let window = Window::after_warmup(settings);
    let race = Arc::new(Mutex::new(Race {
        window,
        expected: ExpectedVersion::NoStream,
        rounds: 0,
        outcomes: Vec::with_capacity(n),
        last_tally: Instant::now(),
        stop: false,
        failure: None,
        measured_rounds: 0,
        conflicts: 0,
        latency: Recorder::new(),
    }));
    let start = Arc::new(Barrier::new(n));
    let done = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            tokio::spawn(racer(
                client.clone(),
                stream.clone(),
                Arc::clone(&factory),
                Arc::clone(&race),
                Arc::clone(&start),
                Arc::clone(&done),
            ))
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let race = Arc::try_unwrap(race)
        .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        .map_err(|_| Error::Check("W6: a racer outlived the race".to_owned()))?;
    if let Some(failure) = race.failure {
        return Err(Error::Check(failure));
    }
    // One event per round, no more, no less.
    let len = stream_len(&clients[0], &stream).await?;
    if len != race.rounds {
        return Err(Error::Check(format!(
            "W6: {stream} holds {len} events after {} rounds with one winner each",
            race.rounds
        )));
    }
    let seconds = window.seconds();
    let rounds = race.measured_rounds;
    let mut row = Row::timed(
        "w6",
        None,
        n,
        1,
        rounds,
        rounds * n as u64,
        seconds,
        race.latency.summary(),
        settings.payload,
    );
    let rounds_per_sec = per_sec(rounds, seconds);
    let conflicts_per_sec = per_sec(race.conflicts, seconds);
    row.extra.push(("rounds", Value::U64(rounds)));
    row.extra
        .push(("rounds_per_sec", Value::F64(rounds_per_sec)));
    row.extra.push(("conflicts", Value::U64(race.conflicts)));
    row.extra
        .push(("conflicts_per_sec", Value::F64(conflicts_per_sec)));
    row.extra.push(("winners_ok", Value::Bool(true)));
    row.extra.push(("rounds_total", Value::U64(race.rounds)));
    row.notes = format!(
        "rounds/s={} conflicts/s={} one winner in all {} rounds",
        crate::si(rounds_per_sec),
        crate::si(conflicts_per_sec),
        race.rounds
    );
    Ok(row)
}

/// One racer: a round per pass until the tally says stop.
async fn racer(
    client: Client,
    stream: Text,
    factory: Arc<EventFactory>,
    race: Arc<Mutex<Race>>,
    start: Arc<Barrier>,
    done: Arc<Barrier>,
) {
    loop {
        start.wait().await;
        // Every racer reads the same state: the tally wrote it before its
        // leader reached `start`, and nobody writes it until `done`.
        let (expected, stop) = {
            let r = lock(&race);
            (r.expected, r.stop)
        };
        if stop {
            return;
        }
        let outcome = match client
            .append(stream.clone(), expected, vec![factory.event()])
            .await
        {
            Ok(r) => Outcome::Won(r),
            Err(ClientError::WrongExpectedVersion { actual, .. }) => Outcome::Lost(actual),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        lock(&race).outcomes.push(outcome);
        if done.wait().await.is_leader() {
            lock(&race).tally();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_client::{LogPosition, StreamVersion};
    use std::time::Duration;

    fn race() -> Race {
        let now = Instant::now();
        Race {
            window: Window {
                start: now,
                end: now + Duration::from_secs(60),
            },
            expected: ExpectedVersion::NoStream,
            rounds: 0,
            outcomes: Vec::new(),
            last_tally: now,
            stop: false,
            failure: None,
            measured_rounds: 0,
            conflicts: 0,
            latency: Recorder::new(),
        }
    }

    fn won(v: u64) -> Outcome {
        Outcome::Won(AppendResult {
            first_version: StreamVersion(v),
            last_version: StreamVersion(v),
            first_position: LogPosition(v),
            last_position: LogPosition(v),
        })
    }

    #[test]
    fn one_winner_advances_the_round() {
        let mut r = race();
        r.outcomes = vec![Outcome::Lost(Some(StreamVersion(0))), won(0)];
        r.tally();
        assert!(r.failure.is_none() && !r.stop);
        assert_eq!(r.expected, ExpectedVersion::Exact(StreamVersion(0)));
        assert_eq!((r.rounds, r.measured_rounds, r.conflicts), (1, 1, 1));
    }

    #[test]
    fn two_winners_none_or_a_wrong_actual_fail() {
        for outcomes in [
            vec![won(0), won(1)],
            vec![Outcome::Lost(None), Outcome::Lost(None)],
            vec![won(0), Outcome::Lost(Some(StreamVersion(5)))],
            vec![won(0), Outcome::Failed("timeout".to_owned())],
        ] {
            let mut r = race();
            r.outcomes = outcomes;
            r.tally();
            assert!(r.stop, "{:?}", r.failure);
            assert!(r.failure.is_some());
            assert_eq!(r.rounds, 0);
        }
    }
}
