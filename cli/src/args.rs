//! The command line: clap definitions and the parsers of the values clap
//! does not know (`--expected`, `tail --from`).

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};
use logbook_client::{ExpectedVersion, StreamVersion};

use crate::failure::EXIT_CODES;

/// Talk to a Logbook daemon: append, read, follow the log, stream metadata
/// and deletion, scavenges and erasure, statistics and backups.
#[derive(Parser, Debug)]
#[command(name = "logbook", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Address of the logbookd server; for a cluster, its nodes'
    /// addresses separated by commas (`a:7117,b:7117,c:7117`): the first
    /// that answers is used, and writes follow the leader.
    #[arg(
        long,
        global = true,
        env = "LOGBOOK_SERVER",
        default_value = "127.0.0.1:7117",
        value_name = "ADDR"
    )]
    pub(crate) server: String,

    /// Token to present: an API token (`logbook token create`) or the
    /// server's --auth-token.
    #[arg(
        long,
        global = true,
        env = "LOGBOOK_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) auth_token: Option<String>,

    /// Log in as this user (with --password); without it, --auth-token
    /// is an API token or the server's token.
    #[arg(long, global = true, env = "LOGBOOK_USER", value_name = "USER")]
    pub(crate) user: Option<String>,

    /// The password of --user (better given in LOGBOOK_PASSWORD than on a
    /// command line others can see).
    #[arg(
        long,
        global = true,
        env = "LOGBOOK_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD",
        requires = "user"
    )]
    pub(crate) password: Option<String>,

    /// Speak TLS, trusting the CA certificates in this PEM file (for a
    /// server started with --tls-cert).
    #[arg(long, global = true, env = "LOGBOOK_TLS_CA", value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,

    /// The name the server's certificate must carry. Default: the host part
    /// of --server.
    #[arg(
        long,
        global = true,
        env = "LOGBOOK_TLS_SERVER_NAME",
        value_name = "NAME",
        requires = "tls_ca"
    )]
    pub(crate) tls_server_name: Option<String>,

    /// This client's certificate (PEM), for a server started with
    /// --tls-client-ca.
    #[arg(
        long,
        global = true,
        env = "LOGBOOK_TLS_CERT",
        value_name = "FILE",
        requires_all = ["tls_ca", "tls_key"]
    )]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        global = true,
        env = "LOGBOOK_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub(crate) tls_key: Option<PathBuf>,

    /// One JSON object per line on stdout, for scripts (see cli/README.md
    /// for the fields), instead of aligned columns.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Check that the server answers; prints its version and the round
    /// trip time.
    Ping,
    /// Append one event to a stream; prints the versions and positions it
    /// got.
    Append(AppendArgs),
    /// Read a stream's events.
    Read(ReadArgs),
    /// Read the global log (every stream, in commit order).
    ReadAll(ReadAllArgs),
    /// Print a stream's or the global log's events, then follow new ones
    /// as they are appended, like `tail -f` (Ctrl-C to stop).
    Tail(TailArgs),
    /// Show a stream's metadata and lifecycle state, or set its metadata
    /// with --set.
    Metadata(MetadataArgs),
    /// Remove a stream's events below a version from every read (the rest
    /// keep their versions).
    Truncate(TruncateArgs),
    /// Delete a stream: reads say it is not found, and a later append
    /// starts it again (or, with --hard, it is gone for ever).
    Delete(DeleteArgs),
    /// Give back the disk that deleted, truncated and expired events still
    /// take: rewrite the segments that hold them, and wait until done
    /// (progress on stderr).
    Scavenge(ScavengeArgs),
    /// Erase a stream for good: delete it for ever and rewrite the files
    /// that hold its events, so that none of their bytes stay on the
    /// server's disk (backups taken before still hold them).
    Erase(EraseArgs),
    /// Show the server's statistics.
    Stats,
    /// Show every node of a cluster: its role, term and Raft indexes, and
    /// how many entries each is behind the leader; or add or remove a node.
    Cluster(ClusterArgs),
    /// List streams (by name prefix) with their last version, live events,
    /// deletion and metadata.
    Streams(StreamsArgs),
    /// Copy a consistent image of the server's store into a local
    /// directory while the server keeps serving.
    Backup(BackupArgs),
    /// List the consumer groups with their floor, lag, events in flight,
    /// consumers and parked events.
    Groups,
    /// Create, change or delete a consumer group.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Who this connection is logged in as, and its rights.
    Whoami,
    /// List the users with their roles, tenant and tokens.
    Users,
    /// Create, change or delete a user.
    #[command(subcommand)]
    User(UserCommand),
    /// List the roles with their grants and store rights.
    Roles,
    /// Create, change or delete a role.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Create or revoke an API token.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `logbook user ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum UserCommand {
    /// Create a user, or replace one's roles, tenant and state (its
    /// password stays unless --password-stdin gives a new one).
    Put(UserPutArgs),
    /// Set a user's password, read from the first line of stdin.
    Passwd(UserNameArgs),
    /// Delete a user (its connections are closed).
    Delete(UserNameArgs),
}

#[derive(Args, Debug)]
pub(crate) struct UserPutArgs {
    /// The user.
    pub(crate) name: String,
    /// A role to grant (repeat for more).
    #[arg(long = "role", value_name = "ROLE")]
    pub(crate) roles: Vec<String>,
    /// Confine the user to the streams named `<TENANT>/...`.
    #[arg(long, value_name = "TENANT")]
    pub(crate) tenant: Option<String>,
    /// Refuse the user's logins (and close its connections).
    #[arg(long)]
    pub(crate) disabled: bool,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    pub(crate) password_stdin: bool,
}

#[derive(Args, Debug)]
pub(crate) struct UserNameArgs {
    /// The user.
    pub(crate) name: String,
}

/// `logbook role ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum RoleCommand {
    /// Create or replace a role.
    Put(RolePutArgs),
    /// Delete a role no user holds.
    Delete(RoleNameArgs),
}

#[derive(Args, Debug)]
pub(crate) struct RolePutArgs {
    /// The role.
    pub(crate) name: String,
    /// Rights on streams by name prefix, `PREFIX=RIGHT,RIGHT` with rights
    /// among read, write, delete, metadata (`=read` alone: every
    /// application stream). Repeat for more.
    #[arg(long = "grant", value_name = "PREFIX=RIGHTS")]
    pub(crate) grants: Vec<String>,
    /// A store right: read_all, catalog, stats, backup, scavenge, users,
    /// groups. Repeat for more.
    #[arg(long = "op", value_name = "RIGHT")]
    pub(crate) ops: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct RoleNameArgs {
    /// The role.
    pub(crate) name: String,
}

/// `logbook token ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Create an API token for a user and print it (shown this once).
    Create(TokenCreateArgs),
    /// Revoke a user's API token (sessions opened with it are closed).
    Revoke(TokenRevokeArgs),
}

#[derive(Args, Debug)]
pub(crate) struct TokenCreateArgs {
    /// The user (not `user`: that is the global --user's id).
    #[arg(value_name = "USER")]
    pub(crate) owner: String,
    /// What the token is for.
    #[arg(long, default_value = "")]
    pub(crate) label: String,
}

#[derive(Args, Debug)]
pub(crate) struct TokenRevokeArgs {
    /// The user.
    #[arg(value_name = "USER")]
    pub(crate) owner: String,
    /// The token's id (`logbook users` lists them).
    pub(crate) id: String,
}

/// `logbook group ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum GroupCommand {
    /// Create a group reading one stream, or the global log (all of it, or
    /// the streams with given prefixes).
    Create(GroupCreateArgs),
    /// Change a group's settings (those not given keep their values).
    Update(GroupUpdateArgs),
    /// Delete a group: its consumers stop, its state and parked list go.
    Delete(GroupNameArgs),
    /// List a group's parked events (oldest first).
    Parked(GroupParkedArgs),
    /// Deliver a group's parked events again.
    Replay(GroupReplayArgs),
    /// Drop every parked event of a group.
    DropParked(GroupNameArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    pub(crate) action: Option<ClusterCommand>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ClusterCommand {
    /// Add a node (started with --join): it becomes a learner, catches up
    /// from the leader, then becomes a voter. Waits until it votes
    /// (progress on stderr).
    Add(ClusterAddArgs),
    /// Remove a node (stop its daemon afterwards).
    Remove(ClusterRemoveArgs),
}

#[derive(Args, Debug)]
pub(crate) struct ClusterAddArgs {
    /// The new node's id (its --node-id).
    pub(crate) node_id: u64,
    /// Where its peers reach it (HOST:PORT, its replication address).
    pub(crate) raft_addr: String,
    /// Where its clients reach it (HOST:PORT, its --listen address).
    pub(crate) client_addr: String,
}

#[derive(Args, Debug)]
pub(crate) struct ClusterRemoveArgs {
    /// The node's id.
    pub(crate) node_id: u64,
}

#[derive(Args, Debug)]
pub(crate) struct GroupParkedArgs {
    /// The group.
    pub(crate) group: String,

    /// List at most this many (default: all).
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct GroupReplayArgs {
    /// The group.
    pub(crate) group: String,

    /// Replay at most this many (default: every event parked now).
    #[arg(long, value_name = "N")]
    pub(crate) max: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct GroupNameArgs {
    /// The group.
    pub(crate) group: String,
}

#[derive(Args, Debug, Default)]
pub(crate) struct GroupSettingsArgs {
    /// Milliseconds an event may stay unacknowledged before it is
    /// delivered again (default 30000).
    #[arg(long, value_name = "MS")]
    pub(crate) ack_wait_ms: Option<u64>,

    /// Deliveries after which a failure parks the event (default 10).
    #[arg(long, value_name = "N")]
    pub(crate) max_deliveries: Option<u32>,

    /// Most events in flight across the consumers (default 1000).
    #[arg(long, value_name = "N")]
    pub(crate) max_in_flight: Option<u32>,

    /// round-robin (no order) or per-stream (one event of a stream at a
    /// time, in order; streams in parallel). Default round-robin.
    #[arg(long, value_name = "STRATEGY", value_parser = ["round-robin", "per-stream"])]
    pub(crate) strategy: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct GroupCreateArgs {
    /// The group (letters, digits, '-', '_', '.').
    pub(crate) group: String,

    /// Read this stream (default: the global log).
    #[arg(long, value_name = "STREAM", conflicts_with = "prefix")]
    pub(crate) stream: Option<String>,

    /// Read the global log's streams with this prefix (repeatable).
    #[arg(long, value_name = "PREFIX")]
    pub(crate) prefix: Vec<String>,

    /// Where to start: start, end (only what comes next), or a position
    /// (a version for a stream), inclusive. Default start.
    #[arg(long, default_value = "start", value_name = "FROM")]
    pub(crate) from: String,

    #[command(flatten)]
    pub(crate) settings: GroupSettingsArgs,
}

#[derive(Args, Debug)]
pub(crate) struct GroupUpdateArgs {
    /// The group.
    pub(crate) group: String,

    #[command(flatten)]
    pub(crate) settings: GroupSettingsArgs,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("payload").required(true).args(["data", "data_file"])))]
pub(crate) struct AppendArgs {
    /// The stream to append to.
    pub(crate) stream: String,

    /// Event type, e.g. MoneyDeposited.
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) event_type: String,

    /// Event data: one JSON value, stored as given.
    #[arg(long, value_name = "JSON")]
    pub(crate) data: Option<String>,

    /// Read the event data from a file (`-`: stdin), stored byte for byte:
    /// it need not be JSON.
    #[arg(long, value_name = "FILE")]
    pub(crate) data_file: Option<PathBuf>,

    /// Event metadata: one JSON value (default: none).
    #[arg(long, value_name = "JSON")]
    pub(crate) metadata: Option<String>,

    /// Append only if the stream is in this state: any, no-stream (the
    /// stream must have no events), exists (at least one), or a number
    /// (its last event has exactly that version; versions count from 0).
    #[arg(long, default_value = "any", value_parser = parse_expected, value_name = "EXPECTED")]
    pub(crate) expected: ExpectedVersion,

    /// Event id (a UUID; default: a fresh UUIDv7). Re-sending a stream's
    /// last event with the same id returns the original result instead of
    /// appending it twice.
    #[arg(long, value_name = "UUID")]
    pub(crate) id: Option<uuid::Uuid>,
}

#[derive(Args, Debug)]
pub(crate) struct ReadArgs {
    /// The stream to read.
    pub(crate) stream: String,

    /// First version to print, inclusive (default: the first event, or the
    /// last one with --backward).
    #[arg(long, value_name = "VERSION")]
    pub(crate) from: Option<u64>,

    /// Newest first.
    #[arg(long)]
    pub(crate) backward: bool,

    /// Print at most N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) limit: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct ReadAllArgs {
    /// First log position to print, inclusive (default: the start, or the
    /// newest event with --backward).
    #[arg(long, value_name = "POSITION")]
    pub(crate) from: Option<u64>,

    /// Newest first.
    #[arg(long)]
    pub(crate) backward: bool,

    /// Print at most N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) limit: Option<u64>,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["stream", "all"])))]
pub(crate) struct TailArgs {
    /// The stream to follow (it need not exist yet).
    pub(crate) stream: Option<String>,

    /// Follow the global log instead of one stream.
    #[arg(long)]
    pub(crate) all: bool,

    /// Where to start: start (all history, the default), end (only events
    /// appended from now on), or a stream version (with a stream) or log
    /// position (with --all) to start at, inclusive.
    #[arg(long, default_value = "start", value_parser = parse_from, value_name = "FROM")]
    pub(crate) from: TailFrom,

    /// Only events of streams whose name starts with P (repeatable; needs
    /// --all). Filtered by the server.
    #[arg(long, value_name = "P", conflicts_with = "stream")]
    pub(crate) stream_prefix: Vec<String>,

    /// Only events whose type starts with T (repeatable).
    #[arg(long, value_name = "T")]
    pub(crate) type_prefix: Vec<String>,

    /// Only events of streams whose name matches the regular expression R
    /// (unanchored; needs --all). Filtered by the server.
    #[arg(long, value_name = "R", conflicts_with = "stream")]
    pub(crate) stream_regex: Option<String>,

    /// Only events whose type matches the regular expression R
    /// (unanchored; needs --all). Filtered by the server.
    #[arg(long, value_name = "R", conflicts_with = "stream")]
    pub(crate) type_regex: Option<String>,

    /// Exit once the history is printed, when the next event would be a
    /// live one.
    #[arg(long)]
    pub(crate) until_caught_up: bool,

    /// Exit after printing N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct MetadataArgs {
    /// The stream (not its `$$` metadata stream).
    pub(crate) stream: String,

    /// Set the metadata to this JSON object, replacing the previous one
    /// whole: max_count, max_age_secs, truncate_before (it only rises),
    /// custom (an object of your own). Without --set, the metadata is
    /// shown.
    #[arg(long, value_name = "JSON")]
    pub(crate) set: Option<String>,

    /// Set only if the metadata is at this version: any (the default),
    /// no-stream (the stream never had metadata, a truncation or a delete),
    /// or the meta version the last change printed.
    #[arg(
        long,
        requires = "set",
        default_value = "any",
        value_parser = parse_expected,
        value_name = "EXPECTED"
    )]
    pub(crate) expected: ExpectedVersion,
}

#[derive(Args, Debug)]
pub(crate) struct StreamsArgs {
    /// Only streams whose name starts with this.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    pub(crate) prefix: String,

    /// Start after this stream name (the last one a previous listing
    /// printed).
    #[arg(long, value_name = "NAME")]
    pub(crate) after: Option<String>,

    /// List at most this many streams (default: all).
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct TruncateArgs {
    /// The stream to truncate.
    pub(crate) stream: String,

    /// The first version to keep; events below it are no longer served. A
    /// version at or below the current truncation changes nothing.
    #[arg(long, value_name = "VERSION")]
    pub(crate) before: u64,
}

#[derive(Args, Debug)]
pub(crate) struct DeleteArgs {
    /// The stream to delete.
    pub(crate) stream: String,

    /// Delete for ever: reads, appends and metadata changes of the stream
    /// fail from now on. Without it, an append (expecting no-stream or
    /// any) starts the stream again, continuing its versions.
    #[arg(long)]
    pub(crate) hard: bool,

    /// Delete only if the stream is in this state (as `append --expected`:
    /// any, no-stream, exists, or its last version).
    #[arg(long, default_value = "any", value_parser = parse_expected, value_name = "EXPECTED")]
    pub(crate) expected: ExpectedVersion,
}

#[derive(Args, Debug)]
pub(crate) struct ScavengeArgs {
    /// Read and write at most N MiB (1,048,576 bytes) per second, leaving
    /// the rest of the disk to appends and reads. Default: no limit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_mb_per_sec: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct EraseArgs {
    /// The stream to erase (not its `$$` metadata stream).
    pub(crate) stream: String,
}

#[derive(Args, Debug)]
pub(crate) struct BackupArgs {
    /// Directory to write the backup into, on this machine (created if
    /// missing). It becomes a data directory `logbookd --data-dir DIR`
    /// opens; backing up into it again copies only what is new.
    #[arg(long, value_name = "DIR")]
    pub(crate) to: PathBuf,
}

/// Where `tail` starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TailFrom {
    /// All history.
    Start,
    /// Live events only.
    End,
    /// At this stream version or log position, inclusive.
    At(u64),
}

/// Parses `--expected`: `any`, `no-stream`, `exists` or a version.
pub(crate) fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    match s {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        _ => s
            .parse::<u64>()
            .map(|v| ExpectedVersion::Exact(StreamVersion(v)))
            .map_err(|_| {
                "expected any, no-stream, exists, or a stream version (a number from 0)".to_owned()
            }),
    }
}

/// Parses `tail --from`: `start`, `end` or a number.
pub(crate) fn parse_from(s: &str) -> Result<TailFrom, String> {
    match s {
        "start" => Ok(TailFrom::Start),
        "end" => Ok(TailFrom::End),
        _ => s
            .parse::<u64>()
            .map(TailFrom::At)
            .map_err(|_| "expected start, end, or a version or position (a number)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn expected_versions() {
        assert_eq!(parse_expected("any"), Ok(ExpectedVersion::Any));
        assert_eq!(parse_expected("no-stream"), Ok(ExpectedVersion::NoStream));
        assert_eq!(parse_expected("exists"), Ok(ExpectedVersion::StreamExists));
        assert_eq!(
            parse_expected("0"),
            Ok(ExpectedVersion::Exact(StreamVersion(0)))
        );
        assert_eq!(
            parse_expected("18446744073709551615"),
            Ok(ExpectedVersion::Exact(StreamVersion(u64::MAX)))
        );
        for bad in ["", "-1", "Any", "no_stream", "1.5", "18446744073709551616"] {
            assert!(parse_expected(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tail_starts() {
        assert_eq!(parse_from("start"), Ok(TailFrom::Start));
        assert_eq!(parse_from("end"), Ok(TailFrom::End));
        assert_eq!(parse_from("7"), Ok(TailFrom::At(7)));
        assert!(parse_from("later").is_err());
    }

    #[test]
    fn tail_needs_exactly_one_target() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        assert!(parse(&["logbook", "tail"]).is_err());
        assert!(parse(&["logbook", "tail", "s", "--all"]).is_err());
        assert!(parse(&["logbook", "tail", "s", "--stream-prefix", "a"]).is_err());
        assert!(parse(&["logbook", "tail", "--all", "--stream-prefix", "a"]).is_ok());
        assert!(parse(&["logbook", "tail", "s", "--type-prefix", "A"]).is_ok());
    }

    #[test]
    fn lifecycle_commands_parse() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        // --expected only goes with --set.
        assert!(parse(&["logbook", "metadata", "s", "--expected", "3"]).is_err());
        let ok = parse(&["logbook", "metadata", "s", "--set", "{}", "--expected", "3"]).unwrap();
        let Command::Metadata(m) = ok.command else {
            panic!("{ok:?}")
        };
        assert_eq!(m.expected, ExpectedVersion::Exact(StreamVersion(3)));
        assert!(parse(&["logbook", "truncate", "s"]).is_err());
        assert!(parse(&["logbook", "truncate", "s", "--before", "-1"]).is_err());
        assert!(parse(&["logbook", "truncate", "s", "--before", "4"]).is_ok());
        let ok = parse(&["logbook", "delete", "s"]).unwrap();
        let Command::Delete(d) = ok.command else {
            panic!("{ok:?}")
        };
        assert!(!d.hard);
        assert_eq!(d.expected, ExpectedVersion::Any);
    }

    #[test]
    fn scavenge_and_erase_parse() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let ok = parse(&["logbook", "scavenge"]).unwrap();
        let Command::Scavenge(s) = ok.command else {
            panic!("{ok:?}")
        };
        assert_eq!(s.max_mb_per_sec, None);
        let ok = parse(&["logbook", "scavenge", "--max-mb-per-sec", "20"]).unwrap();
        let Command::Scavenge(s) = ok.command else {
            panic!("{ok:?}")
        };
        assert_eq!(s.max_mb_per_sec, Some(20));
        assert!(parse(&["logbook", "scavenge", "--max-mb-per-sec", "0"]).is_err());
        assert!(parse(&["logbook", "erase"]).is_err());
        assert!(parse(&["logbook", "erase", "s", "--json"]).is_ok());
    }

    #[test]
    fn append_needs_one_payload() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        assert!(parse(&["logbook", "append", "s", "--type", "T"]).is_err());
        assert!(
            parse(&[
                "logbook",
                "append",
                "s",
                "--type",
                "T",
                "--data",
                "{}",
                "--data-file",
                "f"
            ])
            .is_err()
        );
        let ok = parse(&["logbook", "append", "s", "--type", "T", "--data", "{}"]).unwrap();
        let Command::Append(a) = ok.command else {
            panic!("{ok:?}")
        };
        assert_eq!(a.expected, ExpectedVersion::Any);
    }
}
