//! `logbook cluster`: every member of a cluster as it sees itself (role,
//! term, Raft indexes) and, from the leader, how far behind each is.

use std::time::Duration;

use logbook_client::{Client, RetryPolicy};
use serde_json::json;

use super::Ctx;
use crate::failure::{Exit, Failure};
use crate::output::{Align, Table};

/// How long a member has to answer before it is shown as unreachable.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) async fn run(ctx: &mut Ctx) -> Result<(), Failure> {
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
                "lag": lag_of(m.node_id),
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
                s.as_ref()
                    .map_or_else(|| "unreachable".to_owned(), |s| s.role.clone()),
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
