//! Writes the seed corpus (valid frames and records) into `fuzz/seeds/`:
//! `cargo run --manifest-path fuzz/Cargo.toml --bin make_seeds`.

use std::fs;
use std::path::Path;

use bytes::BytesMut;
use logbook_protocol::{
    Append, Direction, EventId, ExpectedVersion, Hello, NewEvent, Ping, ReadAll, ReadStream,
    Request, Response, StreamVersion, Text,
};
use logbook_storage::fuzzing::fuzz_crc_seed;
use logbook_storage::internals::encode_record;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let event = |n: u128| NewEvent::new(EventId::from_u128(n), "MoneyDeposited", format!("{{\"amount\":{n}}}"));
    let requests = [
        Request::Hello(Hello { protocol_version: 1, client_name: "seed".into(), token: Some("t".into()) }),
        Request::Ping(Ping { nonce: 42 }),
        Request::Append(Append {
            stream: Text::from("account-1"),
            expected: ExpectedVersion::Exact(StreamVersion(3)),
            events: vec![event(1), event(2)],
        }),
        Request::ReadStream(ReadStream {
            stream: Text::from("account-1"),
            from: Some(StreamVersion(0)),
            direction: Direction::Backward,
            max_count: 10, min_position: None }),
        Request::ReadAll(ReadAll { from: None, direction: Direction::Forward, max_count: 100, min_position: None }),
    ];
    let mut frames = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let mut b = BytesMut::new();
        r.encode(&mut b, i as u32 + 1, 1 << 20).map_err(std::io::Error::other)?;
        frames.push(b.to_vec());
    }
    let mut b = BytesMut::new();
    Response::Pong(logbook_protocol::Pong { nonce: 42 }).encode(&mut b, 9, 1 << 20).map_err(std::io::Error::other)?;
    frames.push(b.to_vec());
    for (name, dir) in [("frame_decode", "frame_decode"), ("message_decode", "message_decode")] {
        let d = root.join(dir);
        fs::create_dir_all(&d)?;
        for (i, f) in frames.iter().enumerate() {
            let bytes = if name == "message_decode" { f.get(20..).unwrap_or_default().to_vec() } else { f.clone() };
            fs::write(d.join(format!("seed-{i}")), bytes)?;
        }
    }
    // Records checksummed under `seed`: 0 for `record_decode` (a plain
    // crc32c), the fixed fuzz segment's seed for `segment_recovery`.
    let records_under = |seed: u32| {
        let mut records = Vec::new();
        let mut pos = 0u64;
        for i in 0..4u64 {
            let mut buf = Vec::new();
            let events: Vec<_> = (0..=i).map(|k| event(u128::from(i * 10 + k))).collect();
            encode_record(&mut buf, seed, "account-1", pos, i, 1_700_000_000_000_000, &events);
            pos += i + 1;
            records.push(buf);
        }
        records
    };
    let records = records_under(0);
    let d = root.join("record_decode");
    fs::create_dir_all(&d)?;
    for (i, r) in records.iter().enumerate() {
        fs::write(d.join(format!("seed-{i}")), r)?;
    }
    let d = root.join("segment_recovery");
    fs::create_dir_all(&d)?;
    let segment = records_under(fuzz_crc_seed()).concat();
    fs::write(d.join("seed-all"), &segment)?;
    fs::write(d.join("seed-torn"), segment.get(..segment.len() - 7).unwrap_or_default())?;
    Ok(())
}
