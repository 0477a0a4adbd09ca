//! An in-process network: every node of a cluster in one process, each
//! RPC a direct call into the target's [`openraft::Raft`], and links that
//! can be cut, to test elections, failover and catch-up without sockets.
//!
//! A node cut off ([`Router::isolate`]) neither reaches nor is reached by
//! any other; a node removed ([`Router::remove`], as when it crashed) is
//! unreachable until added again; [`Router::flaky`] drops and delays
//! messages at random (seeded, so a schedule can be replayed).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Cursor;
use std::sync::Arc;

use openraft::AnyError;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use parking_lot::Mutex;

use crate::catchup::{FETCH_BYTES, Fetch, Records};
use crate::sm::{EventLog, StateMachine};
use crate::{Batch, Member, TypeConfig};

type C = TypeConfig;
type Raft<L> = openraft::Raft<C, StateMachine<L>>;
type Vote = openraft::alias::VoteOf<C>;
type Snapshot = openraft::alias::SnapshotOf<C, Cursor<Vec<u8>>>;

struct Links<L: EventLog> {
    nodes: BTreeMap<u64, Raft<L>>,
    /// The event logs' records, for nodes that fetch them.
    records: BTreeMap<u64, Records>,
    isolated: BTreeSet<u64>,
    /// Messages dropped, per thousand.
    drop_per_mille: u64,
    /// Longest delay of a message.
    max_delay: std::time::Duration,
    /// The faults' random state (xorshift).
    rng: u64,
}

impl<L: EventLog> Links<L> {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// The nodes and the state of the links between them.
pub struct Router<L: EventLog> {
    links: Arc<Mutex<Links<L>>>,
}

impl<L: EventLog> Clone for Router<L> {
    fn clone(&self) -> Self {
        Router {
            links: Arc::clone(&self.links),
        }
    }
}

impl<L: EventLog> Default for Router<L> {
    fn default() -> Self {
        Router {
            links: Arc::new(Mutex::new(Links {
                nodes: BTreeMap::new(),
                records: BTreeMap::new(),
                isolated: BTreeSet::new(),
                drop_per_mille: 0,
                max_delay: std::time::Duration::ZERO,
                rng: 1,
            })),
        }
    }
}

impl<L: EventLog> Router<L> {
    /// The network as node `from` sees it (what [`openraft::Raft::new`]
    /// takes).
    pub fn network(&self, from: u64) -> Network<L> {
        Network {
            from,
            router: self.clone(),
        }
    }

    /// Makes `raft` reachable as node `id`.
    pub fn add(&self, id: u64, raft: Raft<L>) {
        self.links.lock().nodes.insert(id, raft);
    }

    /// Serves node `id`'s event log `records` to the nodes that fetch
    /// them (while `id` is reachable).
    pub fn add_records(&self, id: u64, records: Records) {
        self.links.lock().records.insert(id, records);
    }

    /// What node `from` fetches records with ([`crate::catchup`]): from
    /// the nodes it can reach, as messages are.
    pub fn fetch(&self, from: u64) -> LocalFetch<L> {
        LocalFetch {
            from,
            router: self.clone(),
        }
    }

    /// Makes node `id` unreachable (it crashed); returns its handle.
    pub fn remove(&self, id: u64) -> Option<Raft<L>> {
        self.links.lock().nodes.remove(&id)
    }

    /// Cuts every link of node `id`.
    pub fn isolate(&self, id: u64) {
        self.links.lock().isolated.insert(id);
    }

    /// Restores every link of node `id`.
    pub fn heal(&self, id: u64) {
        self.links.lock().isolated.remove(&id);
    }

    /// Drops `drop_per_mille` messages in a thousand and delays each by up
    /// to `max_delay`, chosen from `seed`.
    pub fn flaky(&self, drop_per_mille: u64, max_delay: std::time::Duration, seed: u64) {
        let mut links = self.links.lock();
        links.drop_per_mille = drop_per_mille;
        links.max_delay = max_delay;
        links.rng = seed | 1;
    }

    /// The handle of node `id`, if it is up.
    pub fn node(&self, id: u64) -> Option<Raft<L>> {
        self.links.lock().nodes.get(&id).cloned()
    }

    /// The target's handle if `from` can reach it, after the message's
    /// delay; unreachable if the link is cut or the message dropped.
    async fn reach(&self, from: u64, to: u64) -> Result<Raft<L>, Unreachable<C>> {
        let (raft, delay) = {
            let mut links = self.links.lock();
            let cut = links.isolated.contains(&from) || links.isolated.contains(&to);
            let dropped = links.drop_per_mille > 0 && links.next() % 1000 < links.drop_per_mille;
            let delay = match links.max_delay.as_micros() as u64 {
                0 => std::time::Duration::ZERO,
                max => std::time::Duration::from_micros(links.next() % max),
            };
            match links.nodes.get(&to) {
                Some(raft) if !cut && !dropped => (raft.clone(), delay),
                _ => {
                    return Err(Unreachable::new(&AnyError::error(format!(
                        "node {to} is unreachable from node {from}"
                    ))));
                }
            }
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(raft)
    }
}

/// [`Fetch`] within the process ([`Router::fetch`]).
pub struct LocalFetch<L: EventLog> {
    from: u64,
    router: Router<L>,
}

impl<L: EventLog> Fetch for LocalFetch<L> {
    fn fetch<'a>(
        &'a self,
        id: u64,
        _member: &'a Member,
        from: u64,
        to: u64,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<Batch>>> {
        Box::pin(async move {
            if id == self.from {
                return Ok(Vec::new());
            }
            self.router
                .reach(self.from, id)
                .await
                .map_err(std::io::Error::other)?;
            let records = self.router.links.lock().records.get(&id).cloned();
            let records = records
                .ok_or_else(|| std::io::Error::other(format!("node {id} serves no records")))?;
            tokio::task::spawn_blocking(move || records(from, to, FETCH_BYTES))
                .await
                .map_err(std::io::Error::other)?
        })
    }
}

/// Node `from`'s view of the network.
pub struct Network<L: EventLog> {
    from: u64,
    router: Router<L>,
}

/// Node `from`'s link to node `to`.
pub struct Link<L: EventLog> {
    from: u64,
    to: u64,
    router: Router<L>,
}

impl<L: EventLog> RaftNetworkFactory<C> for Network<L> {
    type Network = Link<L>;

    async fn new_client(&mut self, target: u64, _node: &Member) -> Self::Network {
        Link {
            from: self.from,
            to: target,
            router: self.router.clone(),
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<C> {
    Unreachable::new(&AnyError::error(e.to_string()))
}

impl<L: EventLog> RaftNetworkV2<C> for Link<L> {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let raft = self.router.reach(self.from, self.to).await?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(unreachable(e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        let raft = self.router.reach(self.from, self.to).await?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(unreachable(e)))
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        let raft = self.router.reach(self.from, self.to).await?;
        raft.pre_vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(unreachable(e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let raft = self.router.reach(self.from, self.to).await?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(unreachable(e)))
    }
}
