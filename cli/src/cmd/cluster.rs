//! `logbook cluster`: every member of a cluster as it sees itself (role,
//! term, Raft indexes) and, from the leader, how far behind each is;
//! `logbook cluster add` and `remove` change the members.

use std::time::Duration;

use crate::args::{ClusterArgs, ClusterCommand};

use logbook_client::{Client, RetryPolicy};
use serde_json::json;

use super::Ctx;
use crate::failure::{Exit, Failure};
use crate::output::{Align, Table};

/// How long a member has to answer before it is shown as unreachable.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

/// How often `cluster add` asks again while the new node catches up.
const ADD_POLL: Duration = Duration::from_millis(500);

/// How long `cluster add` waits for the new node's lag to shrink before
/// it gives up (the node stays a learner: `cluster add` again goes on,
/// `cluster remove` takes it out).
const ADD_STALL: Duration = Duration::from_secs(60);

pub(crate) async fn run(ctx: &mut Ctx, args: ClusterArgs) -> Result<(), Failure> {
    match args.action {
        None => status(ctx).await,
        Some(ClusterCommand::Add(a)) => {
            let client = ctx.connect().await?;
            let mut shown = None;
            let (mut best, mut progressed) = (u64::MAX, std::time::Instant::now());
            loop {
                let step = client
                    .add_node(a.node_id, &a.raft_addr, &a.client_addr)
                    .await
                    .map_err(|e| ctx.failed(e))?;
                if step.voter {
                    break;
                }
                // Progress on stderr, when it changes (stdout stays the
                // result).
                if shown != Some(step.lag) {
                    eprintln!(
                        "node {}: catching up, {} entries behind",
                        a.node_id, step.lag
                    );
                    shown = Some(step.lag);
                }
                if step.lag < best {
                    (best, progressed) = (step.lag, std::time::Instant::now());
                } else if progressed.elapsed() > ADD_STALL {
                    return Err(Failure::new(
                        Exit::Server,
                        format!(
                            "node {} has not caught up for {ADD_STALL:?} ({} entries behind): is its daemon running with --join, reachable at {}? It stays a learner: `cluster add` again goes on, `cluster remove` takes it out",
                            a.node_id, step.lag, a.raft_addr
                        ),
                    ));
                }
                tokio::time::sleep(ADD_POLL).await;
            }
            if ctx.json {
                ctx.out
                    .json(&json!({ "node_id": a.node_id, "voter": true }))
            } else {
                ctx.out
                    .text(&format!("node {} added: it votes\n", a.node_id))
            }
        }
        Some(ClusterCommand::Remove(r)) => {
            let client = ctx.connect().await?;
            client
                .remove_node(r.node_id)
                .await
                .map_err(|e| ctx.failed(e))?;
            if ctx.json {
                ctx.out
                    .json(&json!({ "node_id": r.node_id, "removed": true }))
            } else {
                ctx.out
                    .text(&format!("node {} removed: stop its daemon\n", r.node_id))
            }
        }
    }
}

async fn status(ctx: &mut Ctx) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let stats = client.stats().await.map_err(|e| ctx.failed(e))?;
    let Some(here) = stats.cluster else {
        return Err(Failure::new(
            Exit::Server,
            "this server is not a node of a cluster (no --cluster)",
        ));
    };
    // Each member asked directly, once, with the connection's options.
    let mut rows = Vec::new();
    for m in &here.members {
        let options = ctx
            .options(&m.client_addr)?
            .retry(RetryPolicy::none())
            .connect_timeout(Some(MEMBER_TIMEOUT))
            .request_timeout(Some(MEMBER_TIMEOUT));
        let seen = match Client::connect_with(m.client_addr.as_str(), options).await {
            Ok(c) => c.stats().await.ok().and_then(|s| s.cluster),
            Err(_) => None,
        };
        rows.push((m, seen));
    }
    // The lag as the leader knows it (from the leader's own view, when
    // the node asked first is not the leader).
    let leader_view = rows
        .iter()
        .find_map(|(_, s)| s.as_ref().filter(|s| s.role == "leader"))
        .cloned();
    let lag_of = |id: u64| {
        leader_view
            .as_ref()
            .and_then(|l| l.members.iter().find(|m| m.node_id == id))
            .and_then(|m| m.lag)
    };
    if ctx.json {
        for (m, s) in &rows {
            ctx.out.json(&json!({
                "node_id": m.node_id,
                "client_addr": m.client_addr,
                "raft_addr": m.raft_addr,
                "reachable": s.is_some(),
                "role": s.as_ref().map(|s| s.role.clone()),
                "term": s.as_ref().map(|s| s.term),
                "leader": s.as_ref().and_then(|s| s.leader),
                "last_index": s.as_ref().map(|s| s.last_index),
                "committed_index": s.as_ref().map(|s| s.committed_index),
                "applied_index": s.as_ref().map(|s| s.applied_index),
                "snapshot_index": s.as_ref().map(|s| s.snapshot_index),
                "purged_index": s.as_ref().map(|s| s.purged_index),
                "lag": lag_of(m.node_id),
                "voter": !m.learner,
            }))?;
        }
        return Ok(());
    }
    let mut table = Table::new(
        &[
            ("NODE", Align::Right, 0),
            ("CLIENT", Align::Left, 0),
            ("ROLE", Align::Left, 0),
            ("TERM", Align::Right, 0),
            ("LAST", Align::Right, 0),
            ("COMMITTED", Align::Right, 0),
            ("APPLIED", Align::Right, 0),
            ("LAG", Align::Right, 0),
        ],
        false,
    );
    let or_dash = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    for (m, s) in &rows {
        table.push(
            vec![
                m.node_id.to_string(),
                m.client_addr.clone(),
                match s {
                    None => "unreachable".to_owned(),
                    // A node being added (its own view may not know yet).
                    Some(_) if m.learner => "learner".to_owned(),
                    Some(s) => s.role.clone(),
                },
                or_dash(s.as_ref().map(|s| s.term)),
                or_dash(s.as_ref().map(|s| s.last_index)),
                or_dash(s.as_ref().map(|s| s.committed_index)),
                or_dash(s.as_ref().map(|s| s.applied_index)),
                or_dash(lag_of(m.node_id)),
            ],
            &mut ctx.out,
        )?;
    }
    table.print(&mut ctx.out)
}
