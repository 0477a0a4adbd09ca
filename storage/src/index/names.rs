//! The stream names of an index table (`.sidx` format 3): the names of the
//! streams whose first event (version 0) the table indexes, sorted by
//! their UTF-8 bytes, for the stream catalog (`Store::list_streams`).
//!
//! Entries are keyed by a hash of the name, so the tables alone cannot say
//! which streams exist; before format 3 that took a read of the log. Each
//! name is in exactly one table (or memtable): the one holding its
//! version 0. A stream that lost its version 0 to a truncation, a deletion
//! or a limit and a scavenge has a lifecycle state, which names it too
//! (the catalog reads both), so an index rebuilt from a scavenged log lists
//! every stream still.
//!
//! ```text
//! name blocks, from names_offset: entries u16 len | len bytes of UTF-8,
//!     sorted, no repeats; a block ends with the entry that takes it to
//!     NAME_BLOCK_BYTES or more (names are at most 1 KiB)
//! name fences, from name_fences_offset, one per block:
//!     u64 offset | u32 len | u32 crc32c (of the block) | u32 count |
//!     u16 first_len | first_len bytes (the block's first name)
//! ```
//! The footer (see `table`) has the count, both offsets, the block count and
//! a crc32c over the fences. The open checks the fences' crc and does not
//! keep them; a listing reads them again and keeps them (a few bytes per
//! 4 KiB of names), and reads only the blocks from its start on.

use std::path::Path;
use std::sync::Arc;

use logbook_protocol::le;

use crate::error::StorageError;
use crate::fs::VFile;
use crate::index::blocks::BlockWriter;

/// A name block closes at this size or just past it.
pub const NAME_BLOCK_BYTES: usize = 4096;

/// Where a table's names are (format 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamesAt {
    /// Names in the table.
    pub count: u64,
    /// File offset of the first name block.
    pub offset: u64,
    /// File offset of the name fences.
    pub fences_offset: u64,
    /// Bytes of the name fences.
    pub fences_len: u64,
    /// Name blocks.
    pub blocks: u64,
    /// crc32c over the name fences.
    pub fences_crc: u32,
}

/// One name block's fence.
#[derive(Clone, Debug)]
pub struct NameFence {
    offset: u64,
    len: u32,
    crc: u32,
    count: u32,
    first: String,
}

/// Writes `names` (sorted, no repeats) through `w` after the table's other
/// metadata. Returns where they went.
pub(crate) fn write(
    w: &mut BlockWriter<'_>,
    path: &Path,
    names: impl Iterator<Item = Result<String, StorageError>>,
) -> Result<NamesAt, StorageError> {
    let offset = w.position();
    let mut fences: Vec<NameFence> = Vec::new();
    let mut open: Option<NameFence> = None;
    let mut count = 0u64;
    let mut prev: Option<String> = None;
    for name in names {
        let name = name?;
        if prev
            .as_deref()
            .is_some_and(|p| p.as_bytes() >= name.as_bytes())
        {
            return Err(StorageError::Internal(format!(
                "stream names out of order while writing {}",
                path.display()
            )));
        }
        let len = u16::try_from(name.len())
            .map_err(|_| StorageError::Internal(format!("stream name of {} bytes", name.len())))?;
        let block = open.get_or_insert_with(|| NameFence {
            offset: w.position(),
            len: 0,
            crc: 0,
            count: 0,
            first: name.clone(),
        });
        let buf = w.buf();
        let at = buf.len();
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(name.as_bytes());
        let entry = buf.get(at..).unwrap_or_default();
        block.crc = crc32c::crc32c_append(block.crc, entry);
        block.len += entry.len() as u32;
        block.count += 1;
        count += 1;
        if block.len as usize >= NAME_BLOCK_BYTES {
            fences.extend(open.take());
            w.spill()?;
        }
        prev = Some(name);
    }
    fences.extend(open.take());
    let fences_offset = w.position();
    let mut fences_crc = 0u32;
    for f in &fences {
        let buf = w.buf();
        let at = buf.len();
        buf.extend_from_slice(&f.offset.to_le_bytes());
        buf.extend_from_slice(&f.len.to_le_bytes());
        buf.extend_from_slice(&f.crc.to_le_bytes());
        buf.extend_from_slice(&f.count.to_le_bytes());
        buf.extend_from_slice(&(f.first.len() as u16).to_le_bytes());
        buf.extend_from_slice(f.first.as_bytes());
        fences_crc = crc32c::crc32c_append(fences_crc, buf.get(at..).unwrap_or_default());
        w.spill()?;
    }
    Ok(NamesAt {
        count,
        offset,
        fences_offset,
        fences_len: w.position() - fences_offset,
        blocks: fences.len() as u64,
        fences_crc,
    })
}

fn corrupt(path: &Path, offset: u64, what: &str) -> StorageError {
    StorageError::corrupt(path, offset, what)
}

/// Parses the name fences (already checked against their crc).
pub(crate) fn parse_fences(
    path: &Path,
    at: &NamesAt,
    bytes: &[u8],
) -> Result<Vec<NameFence>, StorageError> {
    let mut fences = Vec::with_capacity(at.blocks as usize);
    let mut i = 0usize;
    let mut prev_end = at.offset;
    let mut names = 0u64;
    while i < bytes.len() {
        let bad = || corrupt(path, at.fences_offset + i as u64, "name fence is malformed");
        let offset = le::try_u64(bytes, i).ok_or_else(bad)?;
        let len = le::try_u32(bytes, i + 8).ok_or_else(bad)?;
        let crc = le::try_u32(bytes, i + 12).ok_or_else(bad)?;
        let count = le::try_u32(bytes, i + 16).ok_or_else(bad)?;
        let first_len = usize::from(le::try_u16(bytes, i + 20).ok_or_else(bad)?);
        let first = bytes.get(i + 22..i + 22 + first_len).ok_or_else(bad)?;
        let first = std::str::from_utf8(first).map_err(|_| bad())?.to_owned();
        // Blocks tile the names section in order.
        if offset != prev_end
            || count == 0
            || fences.last().is_some_and(|f: &NameFence| f.first >= first)
        {
            return Err(bad());
        }
        prev_end = offset.saturating_add(u64::from(len));
        names += u64::from(count);
        fences.push(NameFence {
            offset,
            len,
            crc,
            count,
            first,
        });
        i += 22 + first_len;
    }
    if fences.len() as u64 != at.blocks || names != at.count || prev_end != at.fences_offset {
        return Err(corrupt(
            path,
            at.fences_offset,
            "name fences disagree with the footer",
        ));
    }
    Ok(fences)
}

/// Reads, checks and decodes one name block (`next`: the fence of the
/// block after it, whose first name its names must all sort before).
pub(crate) fn read_block(
    file: &Arc<dyn VFile>,
    path: &Path,
    fence: &NameFence,
    next: Option<&NameFence>,
) -> Result<Vec<String>, StorageError> {
    let bytes = crate::index::blocks::read_checked(
        &**file,
        path,
        fence.offset,
        fence.len as usize,
        fence.crc,
    )?;
    let mut out = Vec::with_capacity(fence.count as usize);
    let mut i = 0usize;
    while i < bytes.len() {
        let bad = || corrupt(path, fence.offset + i as u64, "name block is malformed");
        let len = usize::from(le::try_u16(&bytes, i).ok_or_else(bad)?);
        let name = bytes.get(i + 2..i + 2 + len).ok_or_else(bad)?;
        let name = std::str::from_utf8(name).map_err(|_| bad())?;
        if out.last().is_some_and(|p: &String| p.as_str() >= name)
            || (out.is_empty() && name != fence.first)
        {
            return Err(bad());
        }
        out.push(name.to_owned());
        i += 2 + len;
    }
    if out.len() != fence.count as usize
        || next.is_some_and(|n| out.last().is_some_and(|l| *l >= n.first))
    {
        return Err(corrupt(
            path,
            fence.offset,
            "name block disagrees with its fence",
        ));
    }
    Ok(out)
}

/// The index of the block that may hold the first name `>= start`.
pub(crate) fn first_block(fences: &[NameFence], start: &str) -> usize {
    fences
        .partition_point(|f| f.first.as_str() <= start)
        .saturating_sub(1)
}

/// Merges sorted name streams into one, dropping repeats (k-way merge).
/// Stops after the first error, which it passes on.
pub fn merge<I>(mut iters: Vec<I>) -> impl Iterator<Item = Result<String, StorageError>>
where
    I: Iterator<Item = Result<String, StorageError>>,
{
    let mut heads: Vec<Option<String>> = Vec::with_capacity(iters.len());
    let mut failed = false;
    let mut last: Option<String> = None;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        while heads.len() < iters.len() {
            match iters.get_mut(heads.len())?.next().transpose() {
                Ok(n) => heads.push(n),
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
            }
        }
        loop {
            // `str` orders by bytes.
            let (best, _) = heads
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.as_deref().map(|n| (i, n)))
                .min_by_key(|(_, n)| *n)?;
            let name = heads.get_mut(best)?.take()?;
            match iters.get_mut(best)?.next().transpose() {
                Ok(n) => *heads.get_mut(best)? = n,
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
            }
            if last.as_ref() != Some(&name) {
                last = Some(name.clone());
                return Some(Ok(name));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sorts_and_drops_repeats() {
        let a: Vec<String> = ["a", "c", "e"].map(String::from).into();
        let b: Vec<String> = ["b", "c", "f"].map(String::from).into();
        let out: Vec<String> = merge(vec![
            a.into_iter().map(Ok),
            b.into_iter().map(Ok),
            Vec::new().into_iter().map(Ok),
        ])
        .collect::<Result<_, _>>()
        .unwrap();
        assert_eq!(out, ["a", "b", "c", "e", "f"]);
    }
}
