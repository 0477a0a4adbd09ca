//! The daemon's configuration: command-line flags, each with an environment
//! variable equivalent. `logbookd --help` prints this file's doc comments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::net::{ServerConfig, limits};
use logbook_storage::{Durability, RecoveryMode, StoreConfig};

/// Parses a byte size: a number with an optional KiB, MiB or GiB suffix
/// (`268435456`, `256MiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|d| (d.trim(), *m)))
    .unwrap_or((s, 1));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 64KiB, 256MiB, 1GiB)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The members of a cluster, by node id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Members(pub std::collections::BTreeMap<u64, logbook_consensus::Member>);

/// Parses `ID=RAFT_ADDR/CLIENT_ADDR,...`.
pub fn parse_members(s: &str) -> Result<Members, String> {
    let mut members = std::collections::BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            format!(
                "{part:?} is not ID=RAFT_ADDR/CLIENT_ADDR (e.g. 1=127.0.0.1:7201/127.0.0.1:7101)"
            )
        };
        let (id, addrs) = part.split_once('=').ok_or_else(bad)?;
        let (raft, client) = addrs.split_once('/').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        for addr in [raft, client] {
            if addr
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(format!("{addr:?} in {part:?} is not HOST:PORT"));
            }
        }
        let member = logbook_consensus::Member {
            raft: raft.trim().to_owned(),
            client: client.trim().to_owned(),
        };
        if members.insert(id, member).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if members.is_empty() {
        return Err("no members".into());
    }
    Ok(Members(members))
}

/// How appends are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Acknowledge after fdatasync (the default; survives power loss).
    Fsync,
    /// Acknowledge after write(2), without fdatasync. FOR TESTS AND
    /// BENCHMARKS ONLY: a power cut or kernel crash loses acknowledged events.
    Os,
}

/// What recovery does with damage that is not a torn tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RecoveryArg {
    /// Refuse to start and name the file and offset (the default).
    Strict,
    /// Cut the log at the damage and start; later events are lost.
    TruncateDamagedTail,
}

/// The Logbook event-store daemon.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Data directory; created if missing. One daemon per directory.
    #[arg(
        long,
        env = "LOGBOOK_DATA_DIR",
        default_value = "./logbook-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Address to listen on for clients.
    #[arg(long, env = "LOGBOOK_LISTEN", default_value = "127.0.0.1:7117")]
    pub listen: SocketAddr,

    /// Address of an HTTP listener for operators (unset: none): GET
    /// /metrics (Prometheus/OpenMetrics text), /health (200 while the
    /// process is up) and /ready (200 once recovery finished and writes are
    /// accepted, else 503). It starts before recovery. It also serves the
    /// web console at /console (see --no-console).
    #[arg(long, env = "LOGBOOK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Do not serve the web console (/console) on --metrics-listen. The
    /// console asks for a login whenever clients must log in, and shows
    /// each user only what the user may read.
    #[arg(long, env = "LOGBOOK_NO_CONSOLE")]
    pub no_console: bool,

    /// Largest segment file of the log (KiB, MiB, GiB suffixes allowed).
    #[arg(long, env = "LOGBOOK_SEGMENT_BYTES", default_value = "256MiB", value_parser = parse_size, global = true)]
    pub segment_bytes: u64,

    /// When appends are acknowledged.
    #[arg(long, env = "LOGBOOK_DURABILITY", value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,

    /// What recovery does when it finds damage that a crash cannot explain.
    #[arg(long, env = "LOGBOOK_RECOVERY", value_enum, default_value_t = RecoveryArg::Strict)]
    pub recovery: RecoveryArg,

    /// Most client connections; more are refused with a ServerBusy error.
    #[arg(long, env = "LOGBOOK_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Most requests one connection may have awaiting replies; beyond it the
    /// server stops reading that connection (backpressure).
    #[arg(long, env = "LOGBOOK_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: u32,

    /// Largest protocol frame accepted or sent (must exceed the largest
    /// append's log record by 64 KiB).
    #[arg(long, env = "LOGBOOK_MAX_FRAME_BYTES", default_value = "16MiB", value_parser = parse_size)]
    pub max_frame_bytes: u64,

    /// Largest append (batch of events): the type, metadata and data bytes
    /// of its events together, as clients count them (PROTOCOL.md §5.1).
    /// The log record of a batch adds at most 1,066 bytes plus 26 per
    /// event, and the engine is given room for them.
    #[arg(long, env = "LOGBOOK_MAX_APPEND_BYTES", default_value = "15MiB", value_parser = parse_size, global = true)]
    pub max_append_bytes: u64,

    /// Most events in one append (at most 65,535).
    #[arg(
        long,
        env = "LOGBOOK_MAX_EVENTS_PER_APPEND",
        default_value_t = 10_000,
        global = true
    )]
    pub max_events_per_append: u32,

    /// Largest single event (type, metadata and data).
    #[arg(long, env = "LOGBOOK_MAX_EVENT_BYTES", default_value = "4MiB", value_parser = parse_size, global = true)]
    pub max_event_bytes: u64,

    /// Most events one read request returns.
    #[arg(long, env = "LOGBOOK_MAX_READ_COUNT", default_value_t = 10_000)]
    pub max_read_count: u32,

    /// Index entries kept in memory before they are written to disk; also
    /// the most events a restart replays.
    #[arg(long, env = "LOGBOOK_INDEX_FLUSH_ENTRIES", default_value_t = 1_000_000)]
    pub index_flush_entries: usize,

    /// Most segment and index files kept open for reading at once; the
    /// rest are closed (least recently used first) and reopened when read.
    /// Lowered at start if the open-file limit cannot hold it next to
    /// --max-connections.
    #[arg(
        long,
        env = "LOGBOOK_MAX_OPEN_FILES",
        default_value_t = 1024,
        global = true
    )]
    pub max_open_files: usize,

    /// This node's id in a cluster (with --cluster). Unset: a single
    /// server, the default.
    #[arg(long, env = "LOGBOOK_NODE_ID", requires = "cluster")]
    pub node_id: Option<u64>,

    /// Every member of the cluster, this node included, the same on every
    /// node: `ID=RAFT_ADDR/CLIENT_ADDR,...`, e.g.
    /// `1=127.0.0.1:7201/127.0.0.1:7101,2=...,3=...`. RAFT_ADDR is where
    /// the node's peers reach it, CLIENT_ADDR where its clients do (told
    /// to clients in Hello and NotLeader answers). A node starts a cluster
    /// from an empty data directory, or from a backup (--seed).
    #[arg(long, env = "LOGBOOK_CLUSTER", requires = "node_id", value_parser = parse_members)]
    pub cluster: Option<Members>,

    /// This node joins a running cluster instead of starting one: it does
    /// not propose --cluster as the first membership, and waits until the
    /// leader adds it (`logbook cluster add`). --cluster lists this node's
    /// own addresses, and the members it knows of (told to clients until
    /// the leader reaches this node).
    #[arg(long, env = "LOGBOOK_JOIN", requires = "cluster")]
    pub join: bool,

    /// This node starts a new cluster, of itself alone, with the events
    /// its data directory already holds: a restored backup (of a cluster
    /// node, or of a single server that never scavenged). --cluster lists
    /// only this node; the others start empty with --join and are added
    /// with `logbook cluster add`, and copy the events from it. Only a
    /// first start is seeded (the flag does nothing on later ones).
    #[arg(
        long,
        env = "LOGBOOK_SEED",
        requires = "cluster",
        conflicts_with = "join"
    )]
    pub seed: bool,

    /// Where to listen for the other nodes (default: this node's RAFT_ADDR
    /// in --cluster).
    #[arg(long, env = "LOGBOOK_RAFT_LISTEN", requires = "cluster")]
    pub raft_listen: Option<SocketAddr>,

    /// Raft entries between two snapshots of a node's state (where its
    /// event log stands); the Raft log is then purged up to as many
    /// entries before the snapshot (at most 1,000), and a follower further
    /// behind, or a node being added, gets the snapshot: it fetches the
    /// events it lacks from a member. 0: never (the Raft log keeps every
    /// entry, but for the first ones of a cluster seeded with --seed).
    #[arg(long, env = "LOGBOOK_SNAPSHOT_EVERY", default_value_t = logbook_consensus::SNAPSHOT_EVERY, requires = "cluster")]
    pub snapshot_every: u64,

    /// A secret every member of the cluster knows: a node takes Raft
    /// messages only from peers that present it. Unset: none (keep the
    /// replication port on loopback or a private network).
    #[arg(long, env = "LOGBOOK_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// This node's certificate for the replication port (PEM, leaf
    /// first): with --cluster-tls-key and --cluster-tls-ca, nodes speak
    /// only mutual TLS to each other. It must name the host of this
    /// node's RAFT_ADDR and allow both server and client authentication
    /// (a node accepts and connects).
    #[arg(
        long,
        env = "LOGBOOK_CLUSTER_TLS_CERT",
        requires_all = ["cluster_tls_key", "cluster_tls_ca", "cluster"]
    )]
    pub cluster_tls_cert: Option<PathBuf>,

    /// The private key of --cluster-tls-cert (PEM).
    #[arg(long, env = "LOGBOOK_CLUSTER_TLS_KEY", requires = "cluster_tls_cert")]
    pub cluster_tls_key: Option<PathBuf>,

    /// The CA that signs every node's certificate (PEM): a peer must
    /// present a certificate it signed.
    #[arg(long, env = "LOGBOOK_CLUSTER_TLS_CA", requires = "cluster_tls_cert")]
    pub cluster_tls_ca: Option<PathBuf>,

    /// A token that logs in as an admin, besides the users (unset: only
    /// users; with no users either, clients on loopback need no login).
    #[arg(long, env = "LOGBOOK_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// The server's TLS certificate chain (PEM, leaf first): with
    /// --tls-key, the client port speaks only TLS.
    #[arg(long, env = "LOGBOOK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "LOGBOOK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) that clients' certificates must chain to: with
    /// it, every client must present one (mutual TLS).
    #[arg(long, env = "LOGBOOK_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Serve --metrics-listen over TLS too, with the same certificate (and
    /// client CAs, if given).
    #[arg(long, env = "LOGBOOK_METRICS_TLS", requires = "tls_cert")]
    pub metrics_tls: bool,

    /// Seconds a frame has to arrive completely once it has started.
    #[arg(long, env = "LOGBOOK_FRAME_TIMEOUT_SECS", default_value_t = 30)]
    pub frame_timeout_secs: u64,

    /// Bytes all connections together may hold in large frames still
    /// arriving (frames above 64 KiB count); past it they are refused.
    #[arg(long, env = "LOGBOOK_MAX_INCOMPLETE_FRAME_BYTES", default_value = "256MiB", value_parser = parse_size)]
    pub max_incomplete_frame_bytes: u64,

    /// Unsent replies and pushes all connections together may hold before
    /// the connections holding some stop reading (backpressure).
    #[arg(long, env = "LOGBOOK_MAX_OUTBOX_BYTES", default_value = "256MiB", value_parser = parse_size)]
    pub max_outbox_bytes: u64,

    /// Seconds a new connection has to say Hello.
    #[arg(long, env = "LOGBOOK_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// Seconds a connection may go without a request while it has nothing
    /// going on (no subscription, append, scavenge, erase, backup or
    /// unsent reply) before it is closed with IdleTimeout; 0 never closes
    /// one.
    #[arg(long, env = "LOGBOOK_IDLE_TIMEOUT_SECS", default_value_t = 3600)]
    pub idle_timeout_secs: u64,

    /// Seconds a client may leave its pending replies unread before its
    /// connection is closed (its unsent bytes are given back).
    #[arg(long, env = "LOGBOOK_WRITE_TIMEOUT_SECS", default_value_t = 60)]
    pub write_timeout_secs: u64,

    /// Most reads of the log (requests and subscriptions) running at once,
    /// on their own threads, off the network threads.
    #[arg(long, env = "LOGBOOK_READ_THREADS", default_value_t = 8)]
    pub read_threads: usize,

    /// Memory all subscriptions together may hold (4 KiB each plus their
    /// filters'); a Subscribe past it is refused with ServerBusy.
    #[arg(long, env = "LOGBOOK_MAX_SUBSCRIPTION_BYTES", default_value = "256MiB", value_parser = parse_size)]
    pub max_subscription_bytes: u64,

    /// Run a scavenge every this many seconds (the first one that long
    /// after start; skipped while one runs); 0: only when asked.
    #[arg(long, env = "LOGBOOK_SCAVENGE_INTERVAL_SECS", default_value_t = 0)]
    pub scavenge_interval_secs: u64,

    /// Pace of the scheduled scavenges, in MiB of disk traffic per second;
    /// 0: as fast as the disk goes.
    #[arg(long, env = "LOGBOOK_SCAVENGE_MAX_MB_PER_SEC", default_value_t = 0)]
    pub scavenge_max_mb_per_sec: u64,

    /// Where to send the server's spans of traced appends, as OTLP/HTTP
    /// JSON: an `http://host[:port][/path]` URL of an OpenTelemetry
    /// collector (port 4318 and path /v1/traces by default). Unset (the
    /// default): no export. An append is traced when its first event's
    /// metadata carries a sampled W3C `"$traceparent"` (the client's event
    /// layer writes it); its span joins the caller's trace.
    #[arg(long, env = "LOGBOOK_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<crate::otlp::Endpoint>,

    /// Write the audit log (one JSON line per login, failed login, delete,
    /// truncation, erase, scavenge, backup and group change) to this file,
    /// appended to, or `-` for stderr. Unset: no audit log.
    #[arg(long, env = "LOGBOOK_AUDIT_LOG", value_name = "FILE")]
    pub audit_log: Option<crate::net::audit::AuditTarget>,

    /// Most consumer groups the server keeps (each holds up to 8 MiB of
    /// read-ahead while consumers are joined).
    #[arg(long, env = "LOGBOOK_MAX_GROUPS", default_value_t = 128)]
    pub max_groups: usize,

    /// The `service.name` of the exported spans.
    #[arg(long, env = "LOGBOOK_OTLP_SERVICE_NAME", default_value = "logbookd")]
    pub otlp_service_name: String,

    /// Bytes of appends queued for the writer (and in the group being
    /// written) before further appends wait.
    #[arg(long, env = "LOGBOOK_WRITER_QUEUE_BYTES", default_value = "64MiB", value_parser = parse_size, global = true)]
    pub writer_queue_bytes: u64,

    /// Log filter (tracing's env-filter syntax, e.g. `info`,
    /// `logbook_server=debug`).
    #[arg(long, env = "LOGBOOK_LOG", default_value = "info", global = true)]
    pub log: String,

    /// An offline task instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Offline tasks.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every record, footer, position index and stream-index entry of
    /// a stopped store; exit non-zero if anything is wrong.
    Verify,
}

impl Args {
    /// The engine configuration these flags describe.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            segment_bytes: self.segment_bytes,
            durability: match self.durability {
                DurabilityArg::Fsync => Durability::Fsync,
                DurabilityArg::Os => Durability::Os,
            },
            recovery: match self.recovery {
                RecoveryArg::Strict => RecoveryMode::Strict,
                RecoveryArg::TruncateDamagedTail => RecoveryMode::TruncateDamagedTail,
            },
            max_batch_bytes: limits::engine_batch_bytes(
                self.max_append_bytes,
                self.max_events_per_append,
            ),
            max_batch_events: self.max_events_per_append,
            max_event_bytes: self.max_event_bytes,
            index_flush_entries: self.index_flush_entries,
            writer_queue_bytes: self.writer_queue_bytes,
            max_open_files: self.max_open_files,
            keep_removed_ids: self.cluster.is_some(),
            ..StoreConfig::new(&self.data_dir)
        }
    }

    /// The TLS files these flags name, if any.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        Some(crate::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// The network configuration these flags describe (without TLS: the
    /// caller loads [`Args::tls_files`] into [`ServerConfig::tls`]).
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight,
            max_frame_bytes: self.max_frame_bytes.min(u64::from(u32::MAX)) as u32,
            max_read_count: self.max_read_count,
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
            auth_token: self.auth_token.clone(),
            frame_timeout: Duration::from_secs(self.frame_timeout_secs),
            max_incomplete_frame_bytes: self.max_incomplete_frame_bytes.min(usize::MAX as u64)
                as usize,
            max_outbox_bytes: self.max_outbox_bytes.min(usize::MAX as u64) as usize,
            idle_timeout: (self.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(self.idle_timeout_secs)),
            write_timeout: Duration::from_secs(self.write_timeout_secs.max(1)),
            read_threads: self.read_threads.max(1),
            max_subscription_bytes: self.max_subscription_bytes.min(usize::MAX as u64) as usize,
            scavenge_interval: (self.scavenge_interval_secs > 0)
                .then(|| Duration::from_secs(self.scavenge_interval_secs)),
            scavenge_max_bytes_per_sec: (self.scavenge_max_mb_per_sec > 0)
                .then(|| self.scavenge_max_mb_per_sec.saturating_mul(1 << 20)),
            otlp_endpoint: self.otlp_endpoint.clone(),
            otlp_service_name: self.otlp_service_name.clone(),
            max_groups: self.max_groups.max(1),
            audit_log: self.audit_log.clone(),
            ..ServerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }

    #[test]
    fn defaults_are_consistent() {
        let a = Args::parse_from(["logbookd"]);
        let s = a.store_config();
        let n = a.server_config();
        assert_eq!(s.segment_bytes, 256 << 20);
        assert_eq!(n.max_frame_bytes as u64, 16 << 20);
        assert!(u64::from(n.max_frame_bytes) >= s.max_batch_bytes + 64 * 1024);
        // Clients are told exactly what --max-append-bytes says.
        assert_eq!(limits::max_append_bytes(&s), 15 << 20);
        assert_eq!(s.max_batch_events, 10_000);
        assert_eq!(a.listen.to_string(), "127.0.0.1:7117");
        assert_eq!(a.metrics_listen, None);
        let a = Args::parse_from(["logbookd", "--metrics-listen", "127.0.0.1:9117"]);
        assert_eq!(a.metrics_listen, Some("127.0.0.1:9117".parse().unwrap()));
        assert_eq!(a.cluster, None);
    }

    #[test]
    fn cluster_members_parse() {
        let m = parse_members("1=127.0.0.1:7201/127.0.0.1:7101, 2=db-2:7201/db-2:7101").unwrap();
        assert_eq!(m.0.len(), 2);
        assert_eq!(m.0[&2].raft, "db-2:7201");
        assert_eq!(m.0[&2].client, "db-2:7101");
        for bad in [
            "",
            "1=127.0.0.1:7201",
            "x=a:1/b:2",
            "1=a:1/b:2,1=c:3/d:4",
            "1=a/b:2",
            "1=a:1/b:99999",
        ] {
            assert!(parse_members(bad).is_err(), "{bad}");
        }
        let a = Args::parse_from([
            "logbookd",
            "--node-id",
            "2",
            "--cluster",
            "1=127.0.0.1:7201/127.0.0.1:7101,2=127.0.0.1:7202/127.0.0.1:7102",
        ]);
        assert_eq!(a.node_id, Some(2));
        assert!(Args::try_parse_from(["logbookd", "--node-id", "2"]).is_err());
    }
}
