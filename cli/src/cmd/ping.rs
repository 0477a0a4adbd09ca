//! `logbook ping`: one round trip.

use serde::Serialize;

use super::Ctx;
use crate::failure::Failure;

#[derive(Serialize)]
struct Pong<'a> {
    server: &'a str,
    server_version: &'a str,
    protocol_version: u8,
    rtt_ms: f64,
}

pub(crate) async fn run(ctx: &mut Ctx) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let rtt = client.ping().await.map_err(|e| ctx.failed(e))?;
    let info = client.server_info();
    let rtt_ms = rtt.as_secs_f64() * 1e3;
    if ctx.json {
        ctx.out.json(&Pong {
            server: &ctx.server,
            server_version: &info.server_version,
            protocol_version: info.protocol_version,
            rtt_ms,
        })
    } else {
        ctx.out.text(&format!(
            "pong from logbookd {} at {}: {rtt_ms:.3} ms\n",
            info.server_version, ctx.server
        ))
    }
}
