//! `logbook stats`: the server's figures, as `key  value` lines for people
//! (nested fields joined with `.`, byte counts also in KiB/MiB/GiB) or as
//! one JSON object.

use super::Ctx;
use crate::failure::{Exit, Failure};
use crate::render::{Node, human_bytes, key_values};

pub(crate) async fn run(ctx: &mut Ctx) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let stats = client.stats().await.map_err(|e| ctx.failed(e))?;
    if ctx.json {
        return ctx.out.json(&stats);
    }
    let node = Node::of(&stats)
        .map_err(|e| Failure::new(Exit::Other, format!("cannot format the statistics: {e}")))?;
    let mut pairs = Vec::new();
    node.flatten("", &mut pairs);
    for (key, value) in &mut pairs {
        if key.ends_with("bytes")
            && let Ok(n) = value.parse::<u64>()
            && n >= 1024
        {
            value.push_str(&format!(" ({})", human_bytes(n)));
        }
    }
    ctx.out.text(&key_values(&pairs))
}
