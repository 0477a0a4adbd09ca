//! `logbook append`: one event, with an expected version.

use std::io::Read;

use logbook_client::{EventId, NewEvent};
use serde::Serialize;

use super::Ctx;
use crate::args::AppendArgs;
use crate::failure::Failure;
use crate::render::key_values;

#[derive(Serialize)]
struct Appended<'a> {
    stream: &'a str,
    id: String,
    first_version: u64,
    last_version: u64,
    first_position: u64,
    last_position: u64,
}

pub(crate) async fn run(ctx: &mut Ctx, args: AppendArgs) -> Result<(), Failure> {
    // Check the input before connecting: bad input is exit code 2 whether
    // or not the server is up.
    let data = match (&args.data, &args.data_file) {
        (Some(json), _) => checked_json("--data", json)?.into_bytes(),
        (None, Some(path)) => read_file(path)?,
        (None, None) => return Err(Failure::usage("one of --data or --data-file is needed")),
    };
    let metadata = match &args.metadata {
        Some(json) => checked_json("--metadata", json)?.into_bytes(),
        None => Vec::new(),
    };
    let id = args.id.map_or_else(EventId::new_v7, EventId::from);
    let event = NewEvent::new(id, args.event_type.as_str(), data).with_metadata(metadata);

    let client = ctx.connect().await?;
    let result = client
        .append(args.stream.as_str(), args.expected, vec![event])
        .await
        .map_err(|e| ctx.failed(e))?;
    let appended = Appended {
        stream: &args.stream,
        id: id.to_string(),
        first_version: result.first_version.0,
        last_version: result.last_version.0,
        first_position: result.first_position.0,
        last_position: result.last_position.0,
    };
    if ctx.json {
        return ctx.out.json(&appended);
    }
    let pairs = [
        ("stream", appended.stream.to_owned()),
        ("event id", appended.id.clone()),
        ("first version", appended.first_version.to_string()),
        ("last version", appended.last_version.to_string()),
        ("first position", appended.first_position.to_string()),
        ("last position", appended.last_position.to_string()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    ctx.out.text(&key_values(&pairs))
}

/// `text` if it is one JSON value; it is stored as given.
fn checked_json(flag: &str, text: &str) -> Result<String, Failure> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| text.to_owned())
        .map_err(|e| Failure::usage(format!("{flag} is not valid JSON: {e}")))
}

/// The bytes of `path` (`-`: stdin).
fn read_file(path: &std::path::Path) -> Result<Vec<u8>, Failure> {
    let read = if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map(|_| bytes)
    } else {
        std::fs::read(path)
    };
    read.map_err(|e| Failure::usage(format!("cannot read --data-file {}: {e}", path.display())))
}
