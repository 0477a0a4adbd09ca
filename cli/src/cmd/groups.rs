//! `logbook groups` and `logbook group create|update|delete`: consumer
//! groups (PROTOCOL.md §5.13).

use logbook_client::json::{group_json, group_source};
use logbook_client::{Filter, GroupInfo, GroupSettings, GroupSource, GroupStart, GroupStrategy};
use serde_json::json;

use super::Ctx;
use crate::args::{GroupCommand, GroupSettingsArgs};
use crate::failure::{Exit, Failure};
use crate::output::{Align, Table};

fn apply(settings: &mut GroupSettings, args: &GroupSettingsArgs) {
    if let Some(v) = args.ack_wait_ms {
        settings.ack_wait_ms = v;
    }
    if let Some(v) = args.max_deliveries {
        settings.max_deliveries = v;
    }
    if let Some(v) = args.max_in_flight {
        settings.max_in_flight = v;
    }
    match args.strategy.as_deref() {
        Some("per-stream") => settings.strategy = GroupStrategy::PerStream,
        Some("round-robin") => settings.strategy = GroupStrategy::RoundRobin,
        _ => {}
    }
}

/// `logbook groups`.
pub(crate) async fn list(ctx: &mut Ctx) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let groups = client.list_groups().await.map_err(|e| ctx.failed(e))?;
    if ctx.json {
        for g in &groups {
            ctx.out.json(&group_json(g))?;
        }
        return Ok(());
    }
    let mut table = Table::new(
        &[
            ("GROUP", Align::Left, 0),
            ("SOURCE", Align::Left, 0),
            ("STRATEGY", Align::Left, 0),
            ("FLOOR", Align::Right, 0),
            ("LAG", Align::Right, 0),
            ("IN_FLIGHT", Align::Right, 0),
            ("CONSUMERS", Align::Right, 0),
            ("PARKED", Align::Right, 0),
        ],
        false,
    );
    for g in &groups {
        table.push(
            vec![
                g.group.clone(),
                group_source(g),
                g.settings.strategy.as_str().replace('_', "-"),
                g.floor.to_string(),
                g.head.saturating_sub(g.floor).to_string(),
                g.in_flight.to_string(),
                g.consumers.to_string(),
                g.parked.to_string(),
            ],
            &mut ctx.out,
        )?;
    }
    table.print(&mut ctx.out)?;
    if groups.is_empty() {
        ctx.out.text("no groups\n")?;
    }
    Ok(())
}

fn print(ctx: &mut Ctx, what: &str, g: &GroupInfo) -> Result<(), Failure> {
    if ctx.json {
        return ctx.out.json(&group_json(g));
    }
    ctx.out.text(&format!(
        "{what} group {}: {}, {}, ack wait {} ms, max deliveries {}, max in flight {}\n",
        g.group,
        group_source(g),
        g.settings.strategy.as_str().replace('_', "-"),
        g.settings.ack_wait_ms,
        g.settings.max_deliveries,
        g.settings.max_in_flight
    ))
}

/// `logbook group parked`: the parked list, paged through.
async fn parked(
    ctx: &mut Ctx,
    client: &logbook_client::Client,
    group: &str,
    limit: Option<u64>,
) -> Result<(), Failure> {
    let mut table = (!ctx.json).then(|| {
        Table::new(
            &[
                ("ENTRY", Align::Right, 0),
                ("POSITION", Align::Right, 0),
                ("STREAM", Align::Left, 0),
                ("VERSION", Align::Right, 0),
                ("DELIVERIES", Align::Right, 0),
                ("REASON", Align::Left, 0),
            ],
            false,
        )
    });
    let mut left = limit.unwrap_or(u64::MAX);
    let mut after = None;
    let mut listed = 0;
    while left > 0 {
        let want = u32::try_from(left.min(1000)).unwrap_or(1000);
        let page = client
            .list_parked(group, after, want)
            .await
            .map_err(|e| ctx.failed(e))?;
        for e in &page.entries {
            left = left.saturating_sub(1);
            listed += 1;
            match &mut table {
                None => ctx.out.json(&json!({
                    "entry": e.version, "seq": e.seq, "position": e.position,
                    "stream": e.stream, "version": e.event_version,
                    "deliveries": e.deliveries, "reason": e.reason,
                    "parked_at_us": e.parked_at_us,
                }))?,
                Some(t) => t.push(
                    vec![
                        e.version.to_string(),
                        e.position.to_string(),
                        e.stream.clone(),
                        e.event_version.to_string(),
                        e.deliveries.to_string(),
                        e.reason.clone(),
                    ],
                    &mut ctx.out,
                )?,
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if let Some(t) = &mut table {
        t.print(&mut ctx.out)?;
        if listed == 0 {
            ctx.out.text("no parked events\n")?;
        }
    }
    Ok(())
}

/// `logbook group ...`.
pub(crate) async fn run(ctx: &mut Ctx, cmd: GroupCommand) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    match cmd {
        GroupCommand::Create(args) => {
            let source = match args.stream {
                Some(stream) => GroupSource::Stream { stream },
                None if args.prefix.is_empty() => GroupSource::All { filter: None },
                None => GroupSource::All {
                    filter: Some(Filter {
                        stream_prefixes: args.prefix,
                        ..Filter::default()
                    }),
                },
            };
            let start = match args.from.as_str() {
                "start" => GroupStart::Start,
                "end" => GroupStart::End,
                n => GroupStart::At(n.parse().map_err(|_| {
                    Failure::new(
                        Exit::Usage,
                        format!("--from is start, end or a number, not {n:?}"),
                    )
                })?),
            };
            let mut settings = GroupSettings::default();
            apply(&mut settings, &args.settings);
            let g = client
                .create_group(&args.group, source, start, settings)
                .await
                .map_err(|e| ctx.failed(e))?;
            print(ctx, "created", &g)
        }
        GroupCommand::Update(args) => {
            let groups = client.list_groups().await.map_err(|e| ctx.failed(e))?;
            let Some(current) = groups.iter().find(|g| g.group == args.group) else {
                return Err(ctx.failed(logbook_client::Error::GroupNotFound { group: args.group }));
            };
            let mut settings = current.settings;
            apply(&mut settings, &args.settings);
            let g = client
                .update_group(&args.group, settings)
                .await
                .map_err(|e| ctx.failed(e))?;
            print(ctx, "updated", &g)
        }
        GroupCommand::Parked(args) => parked(ctx, &client, &args.group, args.limit).await,
        GroupCommand::Replay(args) => {
            let r = client
                .replay_parked(&args.group, args.max)
                .await
                .map_err(|e| ctx.failed(e))?;
            if ctx.json {
                ctx.out
                    .json(&json!({ "group": args.group, "entries": r.entries, "until": r.until }))
            } else {
                ctx.out.text(&format!(
                    "replaying {} parked event(s) of group {}\n",
                    r.entries, args.group
                ))
            }
        }
        GroupCommand::DropParked(args) => {
            let removed = client
                .delete_parked(&args.group)
                .await
                .map_err(|e| ctx.failed(e))?;
            if ctx.json {
                ctx.out
                    .json(&json!({ "group": args.group, "removed": removed }))
            } else {
                ctx.out.text(&format!(
                    "dropped {removed} parked event(s) of group {}\n",
                    args.group
                ))
            }
        }
        GroupCommand::Delete(args) => {
            client
                .delete_group(&args.group)
                .await
                .map_err(|e| ctx.failed(e))?;
            if ctx.json {
                ctx.out
                    .json(&json!({ "group": args.group, "deleted": true }))
            } else {
                ctx.out.text(&format!("deleted group {}\n", args.group))
            }
        }
    }
}
