//! A node of a Logbook cluster: what the daemon sees of replication. It
//! starts the Raft node over the engine ([`Node::start`]), proposes
//! appends ([`Node::propose`]) and tells the node's role, term, leader and
//! the followers' progress ([`Node::status`]); openraft stays behind it.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logbook_storage::Store;
use logbook_storage::fs::{OsFs, Vfs};
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::impls::ProgressResponder;

use crate::sm::StateMachine;
use crate::store_log::StoreLog;
use crate::tcp::{Identity, TcpFetch, TcpNetwork};
use crate::wal::Wal;
use crate::{Command, Member, Outcome};

/// How a node is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id: one of `members`.
    pub id: u64,
    /// Every member, this node included, by id: the same on every node.
    pub members: BTreeMap<u64, Member>,
    /// Where to listen for peers (the port of this node's `raft`
    /// address, or another interface).
    pub listen: SocketAddr,
    /// The cluster's name and secret ([`crate::tcp`]).
    pub cluster: String,
    /// The secret every member knows, if any.
    pub secret: Option<String>,
    /// Mutual TLS between the nodes, if set ([`crate::tcp::PeerTls`]).
    pub tls: Option<crate::tcp::PeerTls>,
    /// Where the Raft log and the state machine's records go.
    pub dir: PathBuf,
    /// This node joins a running cluster ([`Node::add_member`] on its
    /// leader): it does not propose `members` as the first membership,
    /// and waits for the leader to reach it.
    pub join: bool,
    /// Raft entries between two snapshots ([`crate::SNAPSHOT_EVERY`] by
    /// default; `0`: never, and the Raft log keeps every entry). The Raft
    /// log keeps as many entries before each snapshot, at most
    /// [`crate::KEEP_AFTER_SNAPSHOT`].
    pub snapshot_every: u64,
    /// This node starts a new cluster, of itself alone, from the events
    /// its store already holds (a restored backup of a node or of a single
    /// server): see [`Node::start`]. Only its first start is seeded; it is
    /// harmless on later ones.
    pub seed: bool,
}

/// Why an append was not answered by the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader: send it to `leader`, if one is known.
    NotLeader {
        /// The leader, if known.
        leader: Option<Member>,
    },
    /// The node lost its leadership after taking the append: it may still
    /// be committed by the next leader. A resend (same event ids) is
    /// answered with its first result if it was.
    Unknown(String),
    /// The node stopped (shutting down, or a disk failure).
    Stopped(String),
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(m) } => {
                write!(
                    f,
                    "this node is not the leader; the leader is at {}",
                    m.client
                )
            }
            ProposeError::NotLeader { leader: None } => {
                f.write_str("this node is not the leader, and no leader is known yet")
            }
            ProposeError::Unknown(why) => write!(f, "the append's outcome is unknown: {why}"),
            ProposeError::Stopped(why) => write!(f, "replication stopped: {why}"),
        }
    }
}

/// How far a node being added stands ([`Node::add_member`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joining {
    /// A learner, `lag` entries behind the leader's log: ask again later.
    CatchingUp {
        /// Entries it lacks.
        lag: u64,
    },
    /// A voter.
    Voter,
}

/// Why a membership change was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipError {
    /// This node is not the leader: ask `leader`, if known.
    NotLeader {
        /// The leader, if known.
        leader: Option<Member>,
    },
    /// The change cannot be made as asked (the reason says why).
    Invalid(String),
    /// Proposed, but whether it was committed is unknown: look at the
    /// members, then ask again (asking again is safe).
    Unknown(String),
}

impl std::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembershipError::NotLeader { leader } => ProposeError::NotLeader {
                leader: leader.clone(),
            }
            .fmt(f),
            MembershipError::Invalid(why) => f.write_str(why),
            MembershipError::Unknown(why) => {
                write!(f, "the membership change's outcome is unknown: {why}")
            }
        }
    }
}

/// A learner this close to the leader's log (in entries) is made a voter:
/// it then catches up the rest within a heartbeat or two, so adding it
/// does not stall the quorum.
pub const CAUGHT_UP: u64 = 1000;

/// How recently a learner must have answered the leader to be made a
/// voter (heartbeats go every 150 ms).
const HEARD_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a membership change waits to be committed.
const CHANGE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It takes appends and replicates them.
    Leader,
    /// It applies what the leader replicates.
    Follower,
    /// It is asking for votes.
    Candidate,
    /// It does not vote (being added, or removed).
    Learner,
    /// It stopped.
    Shutdown,
}

impl Role {
    /// Its name, for metrics and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// A member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// Its id.
    pub id: u64,
    /// Its addresses.
    pub member: Member,
    /// The last Raft index the leader knows it holds (on the leader only;
    /// `None` elsewhere or when unknown).
    pub matched: Option<u64>,
    /// It votes (otherwise a learner: being added, catching up).
    pub voter: bool,
}

/// What a node knows of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader's id, if known.
    pub leader: Option<u64>,
    /// The last index of this node's Raft log.
    pub last_index: u64,
    /// The last committed index this node knows of.
    pub committed: u64,
    /// The last index whose effects the event log holds durably.
    pub applied: u64,
    /// The last index the node's latest snapshot covers (0: none yet).
    pub snapshot: u64,
    /// The last index purged from its Raft log (0: none): a follower
    /// further behind than this gets the snapshot.
    pub purged: u64,
    /// The members, by id.
    pub members: Vec<MemberStatus>,
    /// Why the node stopped, if it did.
    pub stopped: Option<String>,
}

impl Status {
    /// The leader's addresses, if it is known.
    pub fn leader_member(&self) -> Option<&Member> {
        let leader = self.leader?;
        self.members
            .iter()
            .find(|m| m.id == leader)
            .map(|m| &m.member)
    }
}

/// How long a node serves reads without hearing from the cluster (a
/// follower from its leader, a leader from a quorum): a few election
/// timeouts, after which the others have elected another leader if they
/// could.
pub const STALE_AFTER: Duration = Duration::from_secs(5);

/// Why a node's copy of the event log must not be read ([`Node::stale`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// It is outside the membership it knows: not added yet, or removed.
    Outside,
    /// It knows no leader, or has not heard from the cluster for
    /// [`STALE_AFTER`].
    CutOff,
}

impl Stale {
    /// Why, for the client.
    pub fn reason(self) -> &'static str {
        match self {
            Stale::Outside => {
                "this node is not a member of the cluster (it was not added yet, or was removed): it serves no reads"
            }
            Stale::CutOff => {
                "this node knows no leader now, or has not heard from the cluster for a while (an election, or it is cut off from the others): its copy may be behind, it serves no reads"
            }
        }
    }
}

/// Changes of a node's status ([`Node::status_changes`]).
pub struct StatusChanges(
    openraft::type_config::alias::WatchReceiverOf<
        crate::TypeConfig,
        openraft::RaftMetrics<crate::TypeConfig>,
    >,
);

impl StatusChanges {
    /// Waits for a change after the last one this saw; `false` once the
    /// node is gone.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

/// A running node.
pub struct Node {
    raft: crate::Raft<StoreLog>,
    /// Where it serves its peers.
    listening: SocketAddr,
    /// The last index whose effects the event log holds durably.
    durable: tokio::sync::watch::Receiver<u64>,
    id: u64,
    members: BTreeMap<u64, Member>,
    server: tokio::task::JoinHandle<()>,
    /// How it fetches a snapshot's records (stopped at shutdown).
    fetch: Arc<TcpFetch>,
    /// See [`Node::system_writes`].
    system_writes: tokio::sync::watch::Receiver<u64>,
    /// Started with `--join` ([`NodeConfig::join`]).
    joins: bool,
    /// When it last heard from a leader.
    contact: Arc<crate::tcp::Contact>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish()
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Once this node erased streams from its segment files, its Raft log may
/// still hold their events' bytes (the entries that appended them, kept
/// until a snapshot lets them be purged, and in the file until it is
/// rewritten): a snapshot is taken at once, the log purged up to what was
/// applied, and the file rewritten without the purged entries
/// ([`crate::wal::CompactOncePurged`]). Ends with the node.
async fn purge_after_erasures(
    raft: crate::Raft<StoreLog>,
    compact: crate::wal::CompactOncePurged,
    mut erased: tokio::sync::watch::Receiver<u64>,
) {
    while erased.changed().await.is_ok() {
        let Some(applied) = raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map(|l| l.index())
        else {
            continue;
        };
        compact.at(applied);
        if let Err(e) = snapshot_and_purge(&raft, applied, "a snapshot past the erase").await {
            tracing::warn!(error = %e, "no snapshot after an erase: the Raft log keeps the erased events until the next one");
            continue;
        }
        tracing::info!(
            upto = applied,
            "Raft log purged after an erase (its file is rewritten without the erased events)"
        );
    }
}

/// Takes a snapshot that covers Raft index `applied`, then has the log
/// purged up to it. openraft drops a trigger made while another snapshot
/// is being built, so it is repeated until one covers `applied`, for at
/// most 60 s (`what` names the wait in the error).
async fn snapshot_and_purge(
    raft: &crate::Raft<StoreLog>,
    applied: u64,
    what: &str,
) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        raft.trigger().snapshot().await.map_err(other)?;
        let built = raft
            .wait(Some(Duration::from_secs(2)))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index() >= applied), what)
            .await;
        match built {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(other(e)),
            Err(_) => {}
        }
    }
    raft.trigger().purge_log(applied).await.map_err(other)
}

/// Seeds a new cluster with the events `store` holds ([`NodeConfig::seed`]):
/// of this node alone, from a log without holes (the others copy it
/// whole), recorded as what came before the first Raft entry.
async fn seed(config: &NodeConfig, store: &Store, vfs: &dyn Vfs, sm_dir: &Path) -> io::Result<()> {
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    seeds_alone(config)?;
    let scan = store.clone();
    let gap = tokio::task::spawn_blocking(move || scan.first_gap())
        .await
        .map_err(other)?
        .map_err(other)?;
    if let Some((from, to)) = gap {
        return refuse(format!(
            "the store holds no events at positions {from}..{to} (a single server's scavenge or erase removed them), and the other nodes copy the log whole: seed from a backup of a cluster node, or of a single server that never removed events"
        ));
    }
    // A backup carries an erased stream's events that its node had not
    // rewritten yet, but not the record of that debt: owed again, before
    // the seed is recorded (the node's eraser runs once it starts).
    let owing = store.clone();
    let owed = tokio::task::spawn_blocking(move || owing.owe_erased_streams())
        .await
        .map_err(other)?
        .map_err(other)?;
    let (head, at) = (store.head().0, store.last_commit_us());
    StateMachine::<StoreLog>::seed(vfs, sm_dir, head, at)?;
    tracing::info!(
        events = head,
        erasures_owed = owed,
        "seeding a new cluster with the events of this store"
    );
    Ok(())
}

/// A seed starts a cluster of itself alone ([`NodeConfig::seed`]): others
/// started as members could take entries before its events, at other
/// positions. They join once it leads.
fn seeds_alone(config: &NodeConfig) -> io::Result<()> {
    if config.join || config.members.len() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a node seeded from its store starts a cluster of itself alone: list only its own addresses in --cluster (no --join), then add the others, started empty with --join (`logbook cluster add`)",
        ));
    }
    Ok(())
}

/// A seeded node's Raft log must not hold its first entries once another
/// node can join: a node replaying them would write their events before
/// the seed's. So a snapshot is taken (it tells where the event log
/// stands, and a joining node fetches the events before it from a
/// member) and the log purged up to it before the node serves anyone;
/// after a crash in between, at the next start.
async fn purge_past_seed(raft: &crate::Raft<StoreLog>, id: u64) -> io::Result<()> {
    if raft.metrics().borrow_watched().purged.is_some() {
        return Ok(());
    }
    let wait = || raft.wait(Some(Duration::from_secs(60)));
    let leading = wait()
        .metrics(
            |m| {
                m.current_leader == Some(id)
                    && m.last_applied.is_some()
                    && m.last_applied.map(|l| l.index()) == m.last_log_index
            },
            "leading the seeded cluster",
        )
        .await
        .map_err(other)?;
    let applied = leading.last_applied.map_or(0, |l| l.index());
    snapshot_and_purge(raft, applied, "a snapshot of the seeded store").await?;
    wait()
        .metrics(
            |m| m.purged.is_some_and(|p| p.index() >= applied),
            "the Raft log purged past the seed",
        )
        .await
        .map_err(other)?;
    tracing::info!(
        upto = applied,
        "seeded: a node that joins copies the events from a snapshot"
    );
    Ok(())
}

impl Node {
    /// Opens the node's Raft log and state machine over `store`, serves
    /// its peers on `config.listen`, and, on a first start, sets the
    /// membership to `config.members` (every member does the same; the
    /// first to win an election keeps it).
    pub async fn start(config: NodeConfig, store: Store) -> io::Result<Node> {
        if !config.members.contains_key(&config.id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node {} is not among the members", config.id),
            ));
        }
        // The event log must hold exactly what the Raft log applied: a
        // store written outside the cluster becomes a node only as the
        // seed of a new one.
        let vfs: Arc<dyn Vfs> = Arc::new(OsFs);
        let sm_dir = config.dir.join("sm");
        if !crate::sm::recorded(vfs.as_ref(), &sm_dir) && store.head().0 > 0 {
            if !config.seed {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the store holds {} events written outside the cluster: a node starts from an empty data directory, or seeds a new cluster of itself alone (--seed)",
                        store.head().0
                    ),
                ));
            }
            seed(&config, &store, vfs.as_ref(), &sm_dir).await?;
        } else if config.seed && store.head().0 == 0 {
            // A wrong --data-dir would start an empty cluster.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--seed: the store holds no events to seed a cluster with (is --data-dir the restored backup?)",
            ));
        }
        let wal = Wal::open(Arc::clone(&vfs), &config.dir.join("log"))?;
        let identity = Arc::new(Identity {
            cluster: config.cluster.clone(),
            node: config.id,
            secret: config.secret.clone(),
            tls: config.tls.clone(),
            limits: crate::tcp::Limits::of(store.config()),
        });
        let fetch = Arc::new(TcpFetch::new(Arc::clone(&identity)));
        let fetching = Arc::clone(&fetch);
        let records: crate::catchup::Records = {
            let store = store.clone();
            Arc::new(move |from, to, max| crate::store_log::read_batches(&store, from, to, max))
        };
        let log = StoreLog::with_fetch(store, fetching);
        let system_writes = log.system_writes();
        let erased = log.erasures_done();
        let compact = wal.compact_once_purged();
        let sm = StateMachine::open(vfs, &sm_dir, log)?;
        let durable = sm.durable();
        let base = sm.base();
        if config.seed && base == 0 {
            // A copy of a node's whole data directory: its Raft state
            // (vote, membership, id) belongs to the cluster it came from.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--seed: this data directory holds a cluster node's Raft state (raft/); a seed starts from a backup (`logbook backup`), which holds the event log alone",
            ));
        }
        let raft = openraft::Raft::new(
            config.id,
            crate::config_snapshotting(
                config.snapshot_every,
                config.snapshot_every.min(crate::KEEP_AFTER_SNAPSHOT),
            ),
            TcpNetwork::new(Arc::clone(&identity)),
            wal,
            sm,
        )
        .await
        .map_err(other)?;
        // A seed's first start that stopped before its cluster was
        // initialized is checked again.
        if base > 0
            && !raft.is_initialized().await.map_err(other)?
            && let Err(e) = seeds_alone(&config)
        {
            let _ = raft.shutdown().await;
            return Err(e);
        }
        tokio::spawn(purge_after_erasures(raft.clone(), compact, erased));
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let listening = listener.local_addr()?;
        let contact = Arc::new(crate::tcp::Contact::default());
        let server = tokio::spawn(crate::tcp::serve(
            listener,
            raft.clone(),
            identity,
            records,
            Arc::clone(&contact),
        ));
        // A first start: every member proposes the same membership. One
        // that already has a log (a restart, or a peer's membership
        // arrived first) refuses, which is as it should be. A node that
        // joins waits for the leader instead.
        if !config.join && !raft.is_initialized().await.map_err(other)? {
            match raft.initialize(config.members.clone()).await {
                Ok(()) => tracing::info!(members = config.members.len(), "cluster initialized"),
                Err(RaftError::APIError(e)) => {
                    tracing::debug!(error = %e, "not initializing: the node has a log")
                }
                Err(e) => return Err(other(e)),
            }
        }
        if base > 0 {
            purge_past_seed(&raft, config.id).await?;
        }
        Ok(Node {
            raft,
            listening,
            durable,
            id: config.id,
            members: config.members,
            server,
            fetch,
            system_writes,
            joins: config.join,
            contact,
        })
    }

    /// A watch that changes once an entry writing a system stream (a name
    /// starting with `$`) is durable in this node's store, and once a
    /// snapshot's events are installed: whoever keeps such a stream's
    /// content in memory (the users document) reads it again then.
    pub fn system_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.system_writes.clone()
    }

    /// Whether the node was started to join a running cluster (it gets
    /// the cluster's log, users included, once a member adds it).
    pub fn joins(&self) -> bool {
        self.joins
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where it serves its peers (the port chosen, when asked for port 0).
    pub fn raft_addr(&self) -> SocketAddr {
        self.listening
    }

    /// Every member's client address, by id: the current membership's,
    /// or as configured while this node has none (it is joining).
    pub fn client_addresses(&self) -> Vec<String> {
        let m = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        let current: Vec<String> = m.nodes().map(|(_, m)| m.client.clone()).collect();
        if current.is_empty() {
            self.members.values().map(|m| m.client.clone()).collect()
        } else {
            current
        }
    }

    /// Adds node `id` at `member`'s addresses, in steps: the first call
    /// (on the leader) makes it a learner, to which the leader sends the
    /// log; a later call, once it is within [`CAUGHT_UP`] entries of the
    /// leader's log, makes it a voter. So a node holding a large log
    /// catches up before it counts in the quorum, and no call waits for
    /// long; calling again after a failover goes on where it stood (the
    /// membership is in the log). A voter already there answers at once.
    pub async fn add_member(&self, id: u64, member: Member) -> Result<Joining, MembershipError> {
        let status = self.leader_status()?;
        match status.members.iter().find(|m| m.id == id) {
            Some(m) if m.member != member => {
                return Err(MembershipError::Invalid(format!(
                    "node {id} is a member at {} / {}: remove it first",
                    m.member.raft, m.member.client
                )));
            }
            Some(m) if m.voter => return Ok(Joining::Voter),
            Some(m) => {
                let lag = status.last_index.saturating_sub(m.matched.unwrap_or(0));
                // Only a learner the leader has reached, close behind, and
                // heard from lately: a voter that is not there stalls the
                // quorum (a one-node cluster's joint configuration then
                // needs it to commit anything).
                if m.matched.is_none() || lag > CAUGHT_UP || !self.heard_from(id) {
                    return Ok(Joining::CatchingUp { lag });
                }
                self.change(openraft::ChangeMembers::AddVoterIds([id].into()))
                    .await?;
                return Ok(Joining::Voter);
            }
            None => {}
        }
        self.change(openraft::ChangeMembers::AddNodes([(id, member)].into()))
            .await?;
        Ok(Joining::CatchingUp {
            lag: status.last_index,
        })
    }

    /// Removes node `id` from the cluster (a voter first stops voting,
    /// then leaves). Removing the leader itself makes it step down once
    /// the change is committed. A node not in the cluster answers at once.
    pub async fn remove_member(&self, id: u64) -> Result<(), MembershipError> {
        let status = self.leader_status()?;
        let Some(m) = status.members.iter().find(|m| m.id == id) else {
            return Ok(());
        };
        if m.voter {
            if status.members.iter().filter(|m| m.voter).count() == 1 {
                return Err(MembershipError::Invalid(format!(
                    "node {id} is the only voter: a cluster needs one"
                )));
            }
            self.change(openraft::ChangeMembers::RemoveVoters([id].into()))
                .await
        } else {
            self.change(openraft::ChangeMembers::RemoveNodes([id].into()))
                .await
        }
    }

    /// Whether this node (leading) had an answer from node `id` within
    /// [`HEARD_WITHIN`].
    fn heard_from(&self, id: u64) -> bool {
        use openraft::Instant as _;
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.heartbeat
            .as_ref()
            .and_then(|h| h.get(&id)?.as_ref().map(|at| at.elapsed()))
            .is_some_and(|since| since <= HEARD_WITHIN)
    }

    /// The status, if this node leads.
    fn leader_status(&self) -> Result<Status, MembershipError> {
        let status = self.status();
        if status.role != Role::Leader {
            return Err(MembershipError::NotLeader {
                leader: status.leader_member().cloned(),
            });
        }
        Ok(status)
    }

    /// Proposes a membership change and waits (at most [`CHANGE_WAIT`])
    /// until it is committed.
    async fn change(
        &self,
        change: openraft::ChangeMembers<u64, Member>,
    ) -> Result<(), MembershipError> {
        let proposed =
            tokio::time::timeout(CHANGE_WAIT, self.raft.change_membership(change, false));
        match proposed.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(MembershipError::NotLeader {
                    leader: f.leader_node,
                })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(MembershipError::Invalid(e.to_string()))
            }
            Ok(Err(e)) => Err(MembershipError::Unknown(e.to_string())),
            Err(_) => Err(MembershipError::Unknown(format!(
                "the change was not committed within {CHANGE_WAIT:?} (no quorum?)"
            ))),
        }
    }

    /// Proposes `command` and returns once it is queued on the Raft log
    /// (commands proposed one after another are committed in that order),
    /// with its outcome to come, once a quorum has it and it is applied
    /// here.
    pub async fn propose(
        &self,
        command: Command,
    ) -> Result<
        impl std::future::Future<Output = Result<Outcome, ProposeError>> + Send + Sync + use<>,
        ProposeError,
    > {
        // Per append: a look at the state, not a copy of the metrics.
        if self.raft.metrics().borrow_watched().state != ServerState::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.status().leader_member().cloned(),
            });
        }
        let (responder, rx) = ProgressResponder::complete_only();
        self.raft
            .client_write_ff(command, Some(responder))
            .await
            .map_err(|e| ProposeError::Stopped(e.to_string()))?;
        Ok(async move {
            match rx.await {
                Ok(Ok(r)) => Ok(r.data),
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(ProposeError::NotLeader {
                    leader: f.leader_node,
                }),
                Ok(Err(e)) => Err(ProposeError::Unknown(e.to_string())),
                Err(_) => Err(ProposeError::Unknown(
                    "the node dropped the append (leadership lost or shutting down)".into(),
                )),
            }
        })
    }

    /// Whether this node is in the membership it knows (a voter or a
    /// learner): a node started with `--join` and not added yet, or one
    /// that learned it was removed, is not, and its event log stops (or
    /// never starts) following the cluster's.
    pub fn is_member(&self) -> bool {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .nodes()
            .any(|(id, _)| *id == self.id)
    }

    /// Why this node's copy of the event log must not be read now, if it
    /// must not: it is outside the membership it knows (see
    /// [`Node::is_member`]), or it knows no leader of its current term (an
    /// election is under way, or it is cut off from the others, or it was
    /// removed without learning it: its copy may then be behind the
    /// cluster's by more than an election timeout, and for ever).
    pub fn stale(&self) -> Option<Stale> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if !m.membership_config.nodes().any(|(id, _)| *id == self.id) {
            return Some(Stale::Outside);
        }
        let cut_off = if m.state == ServerState::Leader {
            // A leader a quorum stopped answering may have been replaced.
            m.last_quorum_acked
                .as_ref()
                .is_some_and(|at| openraft::Instant::elapsed(&**at) > STALE_AFTER)
        } else {
            m.current_leader.is_none() || self.contact.since() > STALE_AFTER
        };
        cut_off.then_some(Stale::CutOff)
    }

    /// What the node knows of the cluster now.
    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow_watched().clone();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let replication = m.replication.as_ref();
        let voters: std::collections::BTreeSet<u64> = m.membership_config.voter_ids().collect();
        let members = m
            .membership_config
            .nodes()
            .map(|(id, member)| MemberStatus {
                id: *id,
                member: member.clone(),
                voter: voters.contains(id),
                matched: if *id == self.id && role == Role::Leader {
                    m.last_log_index
                } else {
                    replication
                        .and_then(|r| r.get(id))
                        .and_then(|l| l.as_ref().map(|l| l.index()))
                },
            })
            .collect();
        Status {
            id: self.id,
            role,
            term: m.current_term,
            leader: m.current_leader,
            last_index: m.last_log_index.unwrap_or(0),
            committed: m.local_committed.map_or(0, |l| l.index()),
            applied: *self.durable.borrow(),
            snapshot: m.snapshot.map_or(0, |l| l.index()),
            purged: m.purged.map_or(0, |l| l.index()),
            members,
            stopped: m.running_state.as_ref().err().map(|e| e.to_string()),
        }
    }

    /// The changes of the node's status, to wait on one after another
    /// (the first wait may return at once).
    pub fn status_changes(&self) -> StatusChanges {
        StatusChanges(self.raft.metrics())
    }

    /// On the leader: waits until this node's event log holds every entry
    /// committed before the call (a new leader's included: those of
    /// earlier terms), so that what it reads there is the cluster's
    /// latest. Refused when the node is not the leader, or stops being it.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        let read = self
            .raft
            .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
            .await
            .map_err(|e| match e {
                RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(f)) => {
                    ProposeError::NotLeader {
                        leader: f.leader_node,
                    }
                }
                e => ProposeError::Unknown(e.to_string()),
            })?;
        let index = read.log_id().index();
        let mut durable = self.durable.clone();
        durable
            .wait_for(|d| *d >= index)
            .await
            .map(drop)
            .map_err(|_| ProposeError::Stopped("the node stopped".into()))
    }

    /// Waits until the status changes (or the node stops).
    pub async fn changed(&self) {
        let mut rx = self.raft.metrics();
        let _ = rx.changed().await;
    }

    /// Stops the node: no more elections, replication or applying.
    pub async fn shutdown(&self) {
        self.server.abort();
        // A snapshot install waiting for records gives up.
        self.fetch.stop();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "stopping replication");
        }
    }
}
