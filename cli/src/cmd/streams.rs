//! `logbook streams [--prefix P] [--after NAME] [--limit N]`: the stream
//! catalog, paged through to the end (or `--limit` streams), as a table or
//! as one JSON object per stream ([`logbook_client::json::StreamJson`]).

use logbook_client::json::StreamJson;
use logbook_client::{Deletion, StreamInfo, StreamMetadata};

use super::Ctx;
use crate::args::StreamsArgs;
use crate::failure::Failure;
use crate::output::{Align, Table};

/// Streams asked for per page.
const PAGE: u32 = 1000;

/// `logbook streams`.
pub(crate) async fn run(ctx: &mut Ctx, args: StreamsArgs) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let mut table = (!ctx.json).then(|| {
        Table::new(
            &[
                ("STREAM", Align::Left, 0),
                ("LAST", Align::Right, 0),
                ("LIVE", Align::Right, 0),
                ("DELETED", Align::Left, 0),
                ("METADATA", Align::Left, 0),
            ],
            false,
        )
    });
    let mut after = args.after;
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut listed = 0u64;
    while left > 0 {
        let want = u32::try_from(left).unwrap_or(u32::MAX).min(PAGE);
        let page = client
            .list_streams(args.prefix.as_str(), after.as_deref(), want)
            .await
            .map_err(|e| ctx.failed(e))?;
        for s in &page.streams {
            listed += 1;
            left = left.saturating_sub(1);
            match &mut table {
                None => ctx.out.json(&StreamJson::new(s))?,
                Some(t) => t.push(row(s), &mut ctx.out)?,
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
            ctx.out.text("no streams\n")?;
        }
    }
    Ok(())
}

fn row(s: &StreamInfo) -> Vec<String> {
    let metadata = if s.metadata == StreamMetadata::default() {
        String::new()
    } else {
        s.metadata.to_json()
    };
    vec![
        s.stream.clone(),
        s.last_version.map_or("-".into(), |v| v.0.to_string()),
        s.event_count.to_string(),
        match s.deleted {
            None => String::new(),
            Some(Deletion::Soft) => "soft".into(),
            Some(Deletion::Hard) => "hard".into(),
        },
        metadata,
    ]
}
