//! [`BlockWriter`]: the layout both index files share (`.sidx` and
//! `.eids`): a header, then fixed-size entries in blocks of a fixed count,
//! each block checksummed on its own (its crc32c and entry count go in its
//! fence), then the caller's metadata and footer; written through a 1 MiB
//! buffer and fdatasynced at the end.

use std::path::Path;
use std::sync::Arc;

use crate::error::StorageError;
use crate::fs::VFile;

/// Flush the buffer once it holds about this much.
const FLUSH_BYTES: usize = 1 << 20;

/// A block's checksum and entry count, for its fence.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockSeal {
    pub crc: u32,
    pub entries: u32,
}

/// Writes one index file: header, blocks of entries, then metadata.
pub(crate) struct BlockWriter<'a> {
    file: &'a Arc<dyn VFile>,
    path: &'a Path,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    offset: u64,
    per_block: usize,
    block_start: usize,
    in_block: usize,
    seals: Vec<BlockSeal>,
}

impl<'a> BlockWriter<'a> {
    /// Starts the file with `header`; blocks hold `per_block` entries, and
    /// there will be about `blocks` of them.
    pub fn new(
        file: &'a Arc<dyn VFile>,
        path: &'a Path,
        header: &[u8],
        per_block: usize,
        blocks: usize,
    ) -> BlockWriter<'a> {
        let mut buf = Vec::with_capacity(FLUSH_BYTES + (8 << 10));
        buf.extend_from_slice(header);
        BlockWriter {
            file,
            path,
            block_start: buf.len(),
            buf,
            offset: 0,
            per_block,
            in_block: 0,
            seals: Vec::with_capacity(blocks),
        }
    }

    fn io(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
        move |e| StorageError::io(op, self.path, e)
    }

    /// Appends one entry, its fields in order. Returns whether it opens a
    /// block (the caller then records the block's first key).
    pub fn entry(&mut self, fields: &[&[u8]]) -> Result<bool, StorageError> {
        let opens = self.in_block == 0;
        for f in fields {
            self.buf.extend_from_slice(f);
        }
        self.in_block += 1;
        if self.in_block == self.per_block {
            self.seal();
            if self.buf.len() >= FLUSH_BYTES {
                self.file
                    .write_all_at(&self.buf, self.offset)
                    .map_err(self.io("write"))?;
                self.offset += self.buf.len() as u64;
                self.buf.clear();
                self.block_start = 0;
            }
        }
        Ok(opens)
    }

    fn seal(&mut self) {
        self.seals.push(BlockSeal {
            crc: crc32c::crc32c(self.buf.get(self.block_start..).unwrap_or_default()),
            entries: self.in_block as u32,
        });
        self.in_block = 0;
        self.block_start = self.buf.len();
    }

    /// Ends the blocks (sealing a short last one). Returns each block's
    /// seal, and the file offset where the metadata starts; the rest of the
    /// file is written into [`BlockWriter::buf`].
    pub fn end_blocks(&mut self) -> (Vec<BlockSeal>, u64) {
        if self.in_block > 0 {
            self.seal();
        }
        (
            std::mem::take(&mut self.seals),
            self.offset + self.buf.len() as u64,
        )
    }

    /// The buffer, for the metadata and footer after the blocks.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The file offset the next byte put in the buffer will have.
    pub fn position(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }

    /// Writes the buffer out if it holds 1 MiB or more (after
    /// [`BlockWriter::end_blocks`], for metadata too large to buffer whole:
    /// a table's stream names).
    pub fn spill(&mut self) -> Result<(), StorageError> {
        if self.buf.len() >= FLUSH_BYTES {
            self.file
                .write_all_at(&self.buf, self.offset)
                .map_err(self.io("write"))?;
            self.offset += self.buf.len() as u64;
            self.buf.clear();
            self.block_start = 0;
        }
        Ok(())
    }

    /// Writes what is buffered and fdatasyncs the file (an index file must
    /// be on disk before the MANIFEST points at it). It is never written
    /// again: the store's budget of open files may close it while idle.
    pub fn finish(self) -> Result<(), StorageError> {
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(self.io("write"))?;
        self.file.sync_data().map_err(self.io("fdatasync"))?;
        self.file.release();
        Ok(())
    }
}

/// Reads block `i` of an index file written by [`BlockWriter`] (blocks of
/// `block_bytes` from `header_len` on; this one holds `len` bytes) and
/// checks it against `crc`, its fence's checksum.
pub(crate) fn read_block(
    file: &Arc<dyn VFile>,
    path: &Path,
    header_len: u64,
    block_bytes: usize,
    i: usize,
    len: usize,
    crc: u32,
) -> Result<Vec<u8>, StorageError> {
    let offset = header_len + (i * block_bytes) as u64;
    read_checked(&**file, path, offset, len, crc)
}

/// Reads `len` bytes at `offset` and checks them against `crc`.
pub(crate) fn read_checked(
    file: &dyn VFile,
    path: &Path,
    offset: u64,
    len: usize,
    crc: u32,
) -> Result<Vec<u8>, StorageError> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| StorageError::io("read", path, e))?;
    let got = crc32c::crc32c(&buf);
    if got != crc {
        return Err(StorageError::ChecksumMismatch {
            file: path.to_path_buf(),
            offset,
            got,
            expected: crc,
        });
    }
    Ok(buf)
}

/// The crc32c of `len` bytes at `offset`, continuing `crc`, read 256 KiB
/// at a time: an open checks an index file's metadata without holding it
/// (one buffer per file would be freed at once, but the allocator keeps
/// such memory: 11 MiB at 100M events).
pub(crate) fn crc_of(
    file: &dyn VFile,
    path: &Path,
    offset: u64,
    len: u64,
    mut crc: u32,
) -> Result<u32, StorageError> {
    let mut chunk = vec![0u8; (256usize << 10).min(len as usize)];
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(chunk.len());
        let part = chunk.get_mut(..n).unwrap_or_default();
        file.read_exact_at(part, offset + at)
            .map_err(|e| StorageError::io("read", path, e))?;
        crc = crc32c::crc32c_append(crc, part);
        at += n as u64;
    }
    Ok(crc)
}
