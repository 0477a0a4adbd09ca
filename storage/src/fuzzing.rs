//! Entry points for the fuzz targets in `fuzz/` and for the bounded
//! property tests that run the same code in `cargo test`. Each takes
//! arbitrary bytes and must never panic, whatever they hold.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use logbook_protocol::Direction;

use crate::config::StoreConfig;
use crate::fs::{MemFs, OpenMode, Vfs};
use crate::record::{self, Record};
use crate::{Store, segment};

/// The nonce of the segment [`recover_segment`] builds: fixed, so that
/// seed inputs (`fuzz/src/bin/make_seeds.rs`) can hold records that pass.
pub const FUZZ_NONCE: u32 = 0x5eed_f00d;

/// The crc32c seed of records in that segment.
pub fn fuzz_crc_seed() -> u32 {
    record::crc_seed(Some(FUZZ_NONCE))
}

/// Checks and parses `data` as a log record, and decodes its events.
pub fn record(data: &[u8]) {
    if let Ok(len) = record::check(data, 1 << 20, 0)
        && let Some(bytes) = data.get(..len)
        && let Ok(rec) = Record::parse(Bytes::copy_from_slice(bytes))
    {
        for e in rec.events() {
            let _ = e;
        }
        for id in rec.event_ids() {
            let _ = id;
        }
    }
}

/// A store whose only segment holds a valid header followed by `data`:
/// recovery must either refuse with an error or open, and whatever it
/// opened must read back without panicking.
pub fn recover_segment(data: &[u8]) {
    let fs = MemFs::new();
    let dir = Path::new("/data/log");
    if fs.create_dir_all(dir).is_err() {
        return;
    }
    let path = dir.join(logbook_protocol::layout::segment_file(0));
    let Ok(f) = fs.open(&path, OpenMode::CreateNew) else {
        return;
    };
    let mut bytes = segment::encode_header(0, FUZZ_NONCE).to_vec();
    bytes.extend_from_slice(data);
    if f.write_all_at(&bytes, 0).is_err() {
        return;
    }
    let config = StoreConfig {
        vfs: Arc::new(fs),
        segment_bytes: 1 << 20,
        max_batch_bytes: 64 << 10,
        max_event_bytes: 32 << 10,
        preallocate_bytes: 0,
        ..StoreConfig::new("/data")
    };
    let Ok(store) = Store::open(config) else {
        return;
    };
    let head = store.head().0;
    let mut from = None;
    while let Ok(page) = store.read_all(from, Direction::Forward, 1000) {
        match page.next {
            Some(n) if n.0 < head => from = Some(n),
            _ => break,
        }
    }
    let _ = store.read_all(None, Direction::Backward, 1000);
    let _ = store.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid_records() -> Vec<u8> {
        let mut buf = Vec::new();
        let mut pos = 0;
        for i in 0..5u64 {
            let events: Vec<_> = (0..=i)
                .map(|k| {
                    logbook_protocol::NewEvent::new(
                        logbook_protocol::EventId::from_u128(u128::from(i * 10 + k)),
                        "T",
                        &b"payload"[..],
                    )
                })
                .collect();
            record::encode(
                &mut buf,
                fuzz_crc_seed(),
                &format!("s{}", i % 2),
                pos,
                i,
                0,
                &events,
            );
            pos += i + 1;
        }
        buf
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn records_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            record(&data);
        }

        #[test]
        fn recovery_of_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            recover_segment(&data);
        }

        #[test]
        fn recovery_of_damaged_records_never_panics(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>()) {
            let mut data = valid_records();
            for (at, x) in flips {
                let i = at.index(data.len());
                data[i] ^= x | 1;
            }
            let keep = cut.index(data.len() + 1).max(data.len() / 2);
            data.truncate(keep);
            recover_segment(&data);
        }
    }

    #[test]
    fn valid_records_recover_whole() {
        // The seed the mutation tests start from is itself valid.
        recover_segment(&valid_records());
        record(&valid_records());
    }
}
