//! `logbook metadata`, `logbook truncate` and `logbook delete`: a stream's
//! lifecycle. Each prints the stream's lifecycle state after the command
//! (`metadata` without `--set`: as it is), as `key  value` lines or as one
//! JSON object ([`State`]).

use logbook_client::{Deletion, LifecycleWritten, StreamMetadata, StreamVersion};
use serde::Serialize;

use super::Ctx;
use crate::args::{DeleteArgs, MetadataArgs, TruncateArgs};
use crate::failure::Failure;
use crate::render::key_values;

/// The `--json` line of every lifecycle command.
#[derive(Serialize)]
struct State<'a> {
    stream: &'a str,
    /// Log position of the latest lifecycle event (in `$$stream`); `null`
    /// if the stream never had one.
    position: Option<u64>,
    /// Its version in `$$stream`: what `metadata --set --expected` takes.
    meta_version: Option<u64>,
    /// The metadata in force (`{}`: none).
    metadata: &'a StreamMetadata,
    /// `"soft"`, `"hard"`, or `null`.
    deleted: Option<Deletion>,
    /// The stream's last version when the latest lifecycle event was
    /// written (`null`: it had no events).
    last_version: Option<u64>,
}

/// `logbook metadata STREAM [--set JSON [--expected E]]`.
pub(crate) async fn metadata(ctx: &mut Ctx, args: MetadataArgs) -> Result<(), Failure> {
    // Check the input before connecting, as `append` does.
    let metadata = match &args.set {
        Some(json) => Some(
            StreamMetadata::from_json(json.as_bytes())
                .map_err(|e| Failure::usage(format!("--set is not valid stream metadata: {e}")))?,
        ),
        None => None,
    };
    let client = ctx.connect().await?;
    let written = match metadata {
        Some(m) => Some(
            client
                .set_stream_metadata(args.stream.as_str(), args.expected, m)
                .await
                .map_err(|e| ctx.failed(e))?,
        ),
        None => client
            .get_stream_metadata(args.stream.as_str())
            .await
            .map_err(|e| ctx.failed(e))?,
    };
    print(ctx, &args.stream, written.as_ref())
}

/// `logbook truncate STREAM --before V`.
pub(crate) async fn truncate(ctx: &mut Ctx, args: TruncateArgs) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let written = client
        .truncate_stream(args.stream.as_str(), StreamVersion(args.before))
        .await
        .map_err(|e| ctx.failed(e))?;
    print(ctx, &args.stream, Some(&written))
}

/// `logbook delete STREAM [--hard] [--expected E]`.
pub(crate) async fn delete(ctx: &mut Ctx, args: DeleteArgs) -> Result<(), Failure> {
    let mode = if args.hard {
        Deletion::Hard
    } else {
        Deletion::Soft
    };
    let client = ctx.connect().await?;
    let written = client
        .delete_stream(args.stream.as_str(), args.expected, mode)
        .await
        .map_err(|e| ctx.failed(e))?;
    print(ctx, &args.stream, Some(&written))
}

/// Prints `stream`'s lifecycle state (`None`: it has none).
fn print(ctx: &mut Ctx, stream: &str, written: Option<&LifecycleWritten>) -> Result<(), Failure> {
    let none = StreamMetadata::default();
    let state = State {
        stream,
        position: written.map(|w| w.position.0),
        meta_version: written.map(|w| w.meta_version.0),
        metadata: written.map_or(&none, |w| &w.state.metadata),
        deleted: written.and_then(|w| w.state.deleted),
        last_version: written.and_then(|w| w.state.last_version),
    };
    if ctx.json {
        return ctx.out.json(&state);
    }
    ctx.out.text(&key_values(&pairs(&state)))
}

/// The human form: one `key  value` line per field that says something.
fn pairs(s: &State<'_>) -> Vec<(String, String)> {
    let mut pairs = vec![("stream", s.stream.to_owned())];
    let (Some(position), Some(meta_version)) = (s.position, s.meta_version) else {
        pairs.push((
            "metadata",
            "none (never set, truncated or deleted)".to_owned(),
        ));
        return own(pairs);
    };
    pairs.push(("meta version", meta_version.to_string()));
    pairs.push(("position", position.to_string()));
    let m = s.metadata;
    if let Some(n) = m.max_count {
        pairs.push(("max count", n.to_string()));
    }
    if let Some(secs) = m.max_age_secs {
        pairs.push(("max age", format!("{secs} s")));
    }
    if let Some(v) = m.truncate_before {
        pairs.push(("truncate before", v.to_string()));
    }
    if !m.custom.is_empty() {
        let custom = serde_json::to_string(&m.custom).unwrap_or_default();
        pairs.push(("custom", custom));
    }
    let deleted = match s.deleted {
        Some(Deletion::Soft) => "soft (an append starts the stream again)",
        Some(Deletion::Hard) => "hard (for ever)",
        None => "no",
    };
    pairs.push(("deleted", deleted.to_owned()));
    let last = s.last_version.map_or("none".to_owned(), |v| v.to_string());
    pairs.push(("last version then", last));
    own(pairs)
}

fn own(pairs: Vec<(&str, String)>) -> Vec<(String, String)> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_form_names_what_is_set() {
        let metadata = StreamMetadata {
            max_count: Some(3),
            custom: serde_json::Map::from_iter([("owner".to_owned(), serde_json::json!("ada"))]),
            ..StreamMetadata::default()
        };
        let state = State {
            stream: "s",
            position: Some(7),
            meta_version: Some(1),
            metadata: &metadata,
            deleted: Some(Deletion::Soft),
            last_version: Some(4),
        };
        let text = key_values(&pairs(&state));
        assert!(text.contains("max count"), "{text}");
        assert!(text.contains(r#"{"owner":"ada"}"#), "{text}");
        assert!(text.contains("soft"), "{text}");
        assert!(!text.contains("max age"), "{text}");

        let none = StreamMetadata::default();
        let state = State {
            stream: "s",
            position: None,
            meta_version: None,
            metadata: &none,
            deleted: None,
            last_version: None,
        };
        let text = key_values(&pairs(&state));
        assert!(text.contains("none"), "{text}");
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["metadata"], serde_json::json!({}));
        assert_eq!(json["position"], serde_json::Value::Null);
    }
}
