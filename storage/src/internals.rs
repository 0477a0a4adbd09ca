//! Engine components for the component benches (`benches/components.rs`)
//! and the fuzz seeds: the record codec, the index table, the memtable and
//! the stream hash. Hidden, unstable, no compatibility promise: the
//! engine's API is [`crate::Store`].

pub use crate::index::flusher::{SLOW_FROZEN, SLOW_TABLES, STOP_FROZEN, STOP_TABLES};
pub use crate::index::ids::{IdTable, write as write_ids};
pub use crate::index::memtable::{Entry, Memtable};
pub use crate::index::table::{Table, write as write_table};
pub use crate::record::{
    Record, RecordError, check as check_record, crc_seed as record_crc_seed,
    encode as encode_record,
};
pub use crate::segment::format::{
    HEADER_LEN as SEGMENT_HEADER_LEN, encode_header as encode_segment_header,
};
pub use crate::stream_map::StreamHasher;
