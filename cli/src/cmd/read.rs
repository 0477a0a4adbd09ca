//! `logbook read` and `logbook read-all`: page through a stream or the
//! global log (the client prefetches the next page while this one prints).

use futures::TryStreamExt;
use logbook_client::{EventStream, LogPosition, ReadAllOptions, ReadStreamOptions, StreamVersion};

use super::Ctx;
use crate::args::{ReadAllArgs, ReadArgs};
use crate::failure::Failure;
use crate::output::EventPrinter;

pub(crate) async fn stream(ctx: &mut Ctx, args: ReadArgs) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let mut options = ReadStreamOptions::default();
    if let Some(v) = args.from {
        options = options.from(StreamVersion(v));
    }
    if args.backward {
        options = options.backward();
    }
    if let Some(n) = args.limit {
        options = options.max_count(n);
    }
    let events = client.read_stream(args.stream.as_str(), options);
    print(ctx, events, true).await
}

pub(crate) async fn all(ctx: &mut Ctx, args: ReadAllArgs) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let mut options = ReadAllOptions::default();
    if let Some(p) = args.from {
        options = options.from(LogPosition(p));
    }
    if args.backward {
        options = options.backward();
    }
    if let Some(n) = args.limit {
        options = options.max_count(n);
    }
    print(ctx, client.read_all(options), false).await
}

async fn print(ctx: &mut Ctx, mut events: EventStream, one_stream: bool) -> Result<(), Failure> {
    let mut printer = EventPrinter::new(ctx.json, one_stream, false);
    let mut count = 0u64;
    loop {
        match events.try_next().await {
            Ok(Some(event)) => {
                printer.event(&event, &mut ctx.out)?;
                count += 1;
            }
            Ok(None) => break,
            Err(e) => {
                // Print what was read before the failure.
                printer.finish(&mut ctx.out)?;
                return Err(ctx.failed(e));
            }
        }
    }
    printer.finish(&mut ctx.out)?;
    if count == 0 && !ctx.json {
        eprintln!("(no events)");
    }
    Ok(())
}
