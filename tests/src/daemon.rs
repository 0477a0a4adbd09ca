//! The built `logbookd` binary as a subprocess.
//!
//! [`logbookd`] builds the binary once per test process (a no-op when cargo
//! already built it) and returns its path, so black-box tests always run the
//! current code; [`logbook_cli`] does the same for the `logbook` tool.
//! [`Daemon`] starts the daemon on `127.0.0.1:0` and learns the port from
//! its log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Flags for a daemon with small segments (64 KiB) and appends that fit
/// them, so that a few hundred events fill several segments.
pub const SMALL_SEGMENTS: [&str; 8] = [
    "--segment-bytes",
    "64KiB",
    "--max-append-bytes",
    "32KiB",
    "--max-events-per-append",
    "100",
    "--max-event-bytes",
    "16KiB",
];

/// Path of the `logbookd` binary, built by cargo if needed.
pub fn logbookd() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| cargo_build("logbook-server", "logbookd"))
        .clone()
}

/// Path of the `logbook` command-line tool, built by cargo if needed.
pub fn logbook_cli() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| cargo_build("logbook-cli", "logbook"))
        .clone()
}

/// Builds binary `bin` of `package` (a no-op when cargo already built it)
/// and returns its path.
fn cargo_build(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "-p",
            package,
            "--bin",
            bin,
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run cargo build for {bin}: {e}"));
    assert!(out.status.success(), "cargo build of {bin} failed");
    // The compiler-artifact message of the binary names its path.
    let target = format!("\"name\":\"{bin}\"");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"compiler-artifact\"") && l.contains(&target))
        .find_map(|l| {
            let at = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let end = l.get(at..)?.find('"')? + at;
            l.get(at..end).map(PathBuf::from)
        })
        .unwrap_or_else(|| panic!("cargo names the {bin} executable"))
}

/// A running `logbookd` subprocess.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its metrics listener listens, when started with
    /// `--metrics-listen`.
    pub metrics_addr: Option<SocketAddr>,
    /// Everything it logged so far.
    pub log: Arc<Mutex<String>>,
    /// The thread draining its log (joined by [`Daemon::wait`], so that
    /// the log is whole once the process has exited).
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Starts logbookd over `data_dir` on a free port, with `extra` flags,
    /// and waits until it accepts clients.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Daemon {
        Daemon::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// [`Daemon::start`] on a given address (to restart a daemon where its
    /// clients expect it).
    pub fn start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Daemon {
        Daemon::launch(Command::new(logbookd()), data_dir, listen, extra)
    }

    /// [`Daemon::start`] under an open-file limit of `nofile` descriptors
    /// (soft and hard, set by the shell's `ulimit -n` before it execs the
    /// daemon: the workspace forbids the `unsafe` a `pre_exec` needs).
    pub fn start_with_fd_limit(data_dir: &Path, nofile: u64, extra: &[&str]) -> Daemon {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(logbookd());
        Daemon::launch(sh, data_dir, "127.0.0.1:0", extra)
    }

    fn launch(mut command: Command, data_dir: &Path, listen: &str, extra: &[&str]) -> Daemon {
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen, "--log", "info"])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn logbookd");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        // Drain its log for as long as it runs (a full pipe would block it),
        // and report the address once it listens.
        let drain = std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Logged before recovery, so before the client address.
            let mut metrics_addr = None;
            let field = |line: &str, name: &str| -> Option<SocketAddr> {
                let at = line.find(name)? + name.len();
                line.get(at..)?.split_whitespace().next()?.parse().ok()
            };
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("serving /metrics") {
                    metrics_addr = field(&line, "metrics_addr=");
                }
                if line.contains("accepting clients")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(field(&line, " listen=").map(|a| (a, metrics_addr)));
                }
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        let (addr, metrics_addr) = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(a)) => a,
            _ => {
                let _ = child.kill();
                panic!(
                    "logbookd did not start:\n{}",
                    log.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
        };
        Daemon {
            child,
            addr,
            metrics_addr,
            log,
            drain: Some(drain),
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with kill(1): the
    /// workspace forbids `unsafe`, and kill(1) is on every Unix.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit, and for its last log lines.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().expect("wait for logbookd");
        if let Some(drain) = self.drain.take() {
            // The pipe ends with the process (unless it left children
            // holding it, which logbookd does not).
            let _ = drain.join();
        }
        status
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Never leave a daemon behind a failed test.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `logbookd` with `args`, which must refuse to start: returns what
/// it wrote to stderr once it exits with a failure. One that keeps
/// running (it took what it should have refused) is killed after 60 s
/// and fails the test, rather than hanging it.
pub fn refuses<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> String {
    let mut child = Command::new(logbookd())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logbookd");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let drain = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for logbookd") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "logbookd kept running instead of refusing to start:\n{}",
                drain.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = drain.join().unwrap_or_default();
    assert!(!status.success(), "logbookd exited with success:\n{text}");
    text
}
