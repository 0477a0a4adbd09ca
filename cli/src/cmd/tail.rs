//! `logbook tail`: a catch-up subscription printed as it arrives: the
//! history, then live events, until Ctrl-C, `--count` or
//! `--until-caught-up`.
//!
//! With `--json`, the subscription's position notices are lines of their
//! own (`{"caught_up":{"position":N}}`, `{"fell_behind":...}`,
//! `{"checkpoint":...}`); for people, catching up and falling behind are
//! said on stderr, so stdout stays one table.

use futures::{FutureExt, TryStreamExt};
use logbook_client::{
    Filter, LogPosition, StreamVersion, SubscribeAllOptions, SubscribeFrom, SubscribeStreamOptions,
    SubscriptionMessage,
};
use serde::Serialize;

use super::Ctx;
use crate::args::{TailArgs, TailFrom};
use crate::failure::Failure;
use crate::output::EventPrinter;
use crate::render::Notice;

/// The `--json` line of a position notice.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum NoticeJson {
    CaughtUp(Notice),
    FellBehind(Notice),
    Checkpoint(Notice),
}

pub(crate) async fn run(ctx: &mut Ctx, args: TailArgs) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let mut subscription = match &args.stream {
        Some(stream) => {
            let options = SubscribeStreamOptions::default().from(start(args.from, StreamVersion));
            client.subscribe_stream(stream.as_str(), options).await
        }
        None => {
            let mut options = SubscribeAllOptions::default().from(start(args.from, LogPosition));
            let filter = Filter {
                stream_prefixes: args.stream_prefix.clone(),
                type_prefixes: args.type_prefix.clone(),
                stream_regex: args.stream_regex.clone(),
                type_regex: args.type_regex.clone(),
                ..Filter::default()
            };
            if filter != Filter::default() {
                options = options.filter(filter);
            }
            client.subscribe_all(options).await
        }
    }
    .map_err(|e| ctx.failed(e))?;

    let mut printer = EventPrinter::new(ctx.json, args.stream.is_some(), true);
    let mut printed = 0u64;
    loop {
        // Flush only when the next message is not already here: a long
        // history goes out in large writes, a live event at once.
        let next = match subscription.try_next().now_or_never() {
            Some(next) => next,
            None => {
                ctx.out.flush()?;
                subscription.try_next().await
            }
        };
        let message = match next {
            Ok(Some(message)) => message,
            // A subscription only ends with an error; should it end
            // without one, there is nothing more to print.
            Ok(None) => return Ok(()),
            Err(e) => return Err(ctx.failed(e)),
        };
        match message {
            SubscriptionMessage::Event(event) => {
                // A stream subscription has no server-side filter: the type
                // prefixes apply here.
                let wanted = args.stream.is_none()
                    || args.type_prefix.is_empty()
                    || args
                        .type_prefix
                        .iter()
                        .any(|p| event.event_type.as_str().starts_with(p.as_str()));
                if wanted {
                    printer.event(&event, &mut ctx.out)?;
                    printed += 1;
                    if args.count.is_some_and(|n| printed >= n) {
                        return Ok(());
                    }
                }
            }
            SubscriptionMessage::CaughtUp { position, .. } => {
                notice(
                    ctx,
                    NoticeJson::CaughtUp(Notice {
                        position: position.0,
                    }),
                )?;
                if args.until_caught_up {
                    return Ok(());
                }
            }
            SubscriptionMessage::FellBehind { position, .. } => {
                notice(
                    ctx,
                    NoticeJson::FellBehind(Notice {
                        position: position.0,
                    }),
                )?;
            }
            SubscriptionMessage::Checkpoint { position } => {
                notice(
                    ctx,
                    NoticeJson::Checkpoint(Notice {
                        position: position.0,
                    }),
                )?;
            }
            // Messages added to the client later are not printed.
            _ => {}
        }
    }
}

/// Where the subscription starts: `--from N` is inclusive, the client's
/// `After` exclusive.
fn start<P>(from: TailFrom, typed: impl FnOnce(u64) -> P) -> SubscribeFrom<P> {
    match from {
        TailFrom::Start | TailFrom::At(0) => SubscribeFrom::Start,
        TailFrom::At(n) => SubscribeFrom::After(typed(n - 1)),
        TailFrom::End => SubscribeFrom::End,
    }
}

/// Prints a position notice: a JSON line, or for people a line on stderr
/// (checkpoints, which only matter to programs that store them, are not
/// shown to people).
fn notice(ctx: &mut Ctx, notice: NoticeJson) -> Result<(), Failure> {
    if ctx.json {
        return ctx.out.json(&notice);
    }
    let said = match notice {
        NoticeJson::CaughtUp(n) => format!("-- caught up at log position {} --", n.position),
        NoticeJson::FellBehind(n) => format!(
            "-- fell behind at log position {} (catching up again) --",
            n.position
        ),
        NoticeJson::Checkpoint(_) => return Ok(()),
    };
    // Events printed so far come first.
    ctx.out.flush()?;
    eprintln!("{said}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_is_inclusive() {
        assert_eq!(start(TailFrom::Start, LogPosition), SubscribeFrom::Start);
        assert_eq!(start(TailFrom::At(0), LogPosition), SubscribeFrom::Start);
        assert_eq!(
            start(TailFrom::At(5), LogPosition),
            SubscribeFrom::After(LogPosition(4))
        );
        assert_eq!(start(TailFrom::End, StreamVersion), SubscribeFrom::End);
    }

    #[test]
    fn notices_are_objects_of_their_own() {
        let line = serde_json::to_string(&NoticeJson::CaughtUp(Notice { position: 7 })).unwrap();
        assert_eq!(line, r#"{"caught_up":{"position":7}}"#);
        let line = serde_json::to_string(&NoticeJson::Checkpoint(Notice { position: 9 })).unwrap();
        assert_eq!(line, r#"{"checkpoint":{"position":9}}"#);
    }
}
