//! Hand-written MessagePack for the hot bodies (those that carry events).
//!
//! Serde writes a value as many small writes through `io::Write` and reads
//! an event array element by element through generic visitors; measured on
//! 200-byte events that cost ~200 ns per event each way, too much for a
//! server that pushes millions of events per second. These primitives write
//! with `BufMut` into a buffer reserved once and read by slicing the body,
//! so a whole event costs a few branches, two small copies on encode and no
//! copy on decode.
//!
//! Writers use the most compact encoding, as the MessagePack spec asks;
//! readers accept every encoding of a value (a `uint 64` holding 3 is still
//! 3), since other implementations may not minimise.

use bytes::{BufMut, BytesMut};

use crate::types::EventId;

/// A reason a body was refused; callers wrap it in `Error::Malformed`.
pub(crate) type Reason = &'static str;

// ------------------------------------------------------------------ writing

/// Writes an unsigned integer.
pub(crate) fn put_uint(dst: &mut BytesMut, v: u64) {
    match v {
        0..=0x7f => dst.put_u8(v as u8),
        0x80..=0xff => {
            dst.put_u8(0xcc);
            dst.put_u8(v as u8);
        }
        0x100..=0xffff => {
            dst.put_u8(0xcd);
            dst.put_u16(v as u16);
        }
        0x1_0000..=0xffff_ffff => {
            dst.put_u8(0xce);
            dst.put_u32(v as u32);
        }
        _ => {
            dst.put_u8(0xcf);
            dst.put_u64(v);
        }
    }
}

/// Writes a signed integer; non-negative values use the unsigned forms.
pub(crate) fn put_sint(dst: &mut BytesMut, v: i64) {
    if v >= 0 {
        put_uint(dst, v as u64);
    } else if v >= -32 {
        dst.put_i8(v as i8);
    } else if v >= i64::from(i8::MIN) {
        dst.put_u8(0xd0);
        dst.put_i8(v as i8);
    } else if v >= i64::from(i16::MIN) {
        dst.put_u8(0xd1);
        dst.put_i16(v as i16);
    } else if v >= i64::from(i32::MIN) {
        dst.put_u8(0xd2);
        dst.put_i32(v as i32);
    } else {
        dst.put_u8(0xd3);
        dst.put_i64(v);
    }
}

/// Writes a str. Callers keep strings far below 4 GiB (frames are capped
/// well below), so the length always fits its field.
pub(crate) fn put_str(dst: &mut BytesMut, s: &str) {
    let n = s.len();
    match n {
        0..=31 => dst.put_u8(0xa0 | n as u8),
        32..=0xff => {
            dst.put_u8(0xd9);
            dst.put_u8(n as u8);
        }
        0x100..=0xffff => {
            dst.put_u8(0xda);
            dst.put_u16(n as u16);
        }
        _ => {
            dst.put_u8(0xdb);
            dst.put_u32(n as u32);
        }
    }
    dst.put_slice(s.as_bytes());
}

/// Writes a bin (see [`put_str`] on lengths).
pub(crate) fn put_bin(dst: &mut BytesMut, b: &[u8]) {
    let n = b.len();
    match n {
        0..=0xff => {
            dst.put_u8(0xc4);
            dst.put_u8(n as u8);
        }
        0x100..=0xffff => {
            dst.put_u8(0xc5);
            dst.put_u16(n as u16);
        }
        _ => {
            dst.put_u8(0xc6);
            dst.put_u32(n as u32);
        }
    }
    dst.put_slice(b);
}

/// Writes an array header for `n` elements.
pub(crate) fn put_array_len(dst: &mut BytesMut, n: usize) {
    match n {
        0..=15 => dst.put_u8(0x90 | n as u8),
        16..=0xffff => {
            dst.put_u8(0xdc);
            dst.put_u16(n as u16);
        }
        _ => {
            dst.put_u8(0xdd);
            dst.put_u32(n as u32);
        }
    }
}

/// Writes a map header for `n` entries (bodies have a handful).
pub(crate) fn put_map_len(dst: &mut BytesMut, n: u8) {
    if n <= 15 {
        dst.put_u8(0x80 | n);
    } else {
        dst.put_u8(0xde);
        dst.put_u16(u16::from(n));
    }
}

// ------------------------------------------------------------------ reading

/// A cursor over a body. Every read checks bounds and returns a reason
/// instead of panicking.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn byte(&mut self) -> Result<u8, Reason> {
        let (&b, rest) = self.buf.split_first().ok_or("unexpected end of body")?;
        self.buf = rest;
        Ok(b)
    }

    fn peek(&self) -> Result<u8, Reason> {
        self.buf.first().copied().ok_or("unexpected end of body")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Reason> {
        if n > self.buf.len() {
            return Err("unexpected end of body");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Reason> {
        self.take(N)
            .and_then(|s| <[u8; N]>::try_from(s).map_err(|_| "unexpected end of body"))
    }

    fn be_u16(&mut self) -> Result<u16, Reason> {
        self.array().map(u16::from_be_bytes)
    }

    fn be_u32(&mut self) -> Result<u32, Reason> {
        self.array().map(u32::from_be_bytes)
    }

    fn be_u64(&mut self) -> Result<u64, Reason> {
        self.array().map(u64::from_be_bytes)
    }

    /// Reads any integer encoding, as a signed 128-bit value so both ranges
    /// fit.
    fn int(&mut self) -> Result<i128, Reason> {
        let m = self.byte()?;
        Ok(match m {
            0x00..=0x7f => i128::from(m),
            0xe0..=0xff => i128::from(m as i8),
            0xcc => i128::from(self.byte()?),
            0xcd => i128::from(self.be_u16()?),
            0xce => i128::from(self.be_u32()?),
            0xcf => i128::from(self.be_u64()?),
            0xd0 => i128::from(self.byte()? as i8),
            0xd1 => i128::from(self.be_u16()? as i16),
            0xd2 => i128::from(self.be_u32()? as i32),
            0xd3 => i128::from(self.be_u64()? as i64),
            _ => return Err("expected an integer"),
        })
    }

    /// Reads an unsigned integer (any encoding whose value is >= 0).
    pub(crate) fn uint(&mut self) -> Result<u64, Reason> {
        u64::try_from(self.int()?).map_err(|_| "integer out of range")
    }

    /// Reads a signed 64-bit integer.
    pub(crate) fn sint(&mut self) -> Result<i64, Reason> {
        i64::try_from(self.int()?).map_err(|_| "integer out of range")
    }

    /// Reads nil as `None`, otherwise an unsigned integer.
    pub(crate) fn opt_uint(&mut self) -> Result<Option<u64>, Reason> {
        if self.peek()? == 0xc0 {
            self.buf = self.buf.get(1..).unwrap_or_default();
            Ok(None)
        } else {
            self.uint().map(Some)
        }
    }

    /// Whether the next value is a str (without consuming it).
    pub(crate) fn next_is_str(&self) -> bool {
        matches!(self.buf.first(), Some(0xa0..=0xbf | 0xd9..=0xdb))
    }

    fn str_len(&mut self) -> Result<usize, Reason> {
        let m = self.byte()?;
        Ok(match m {
            0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => usize::from(self.byte()?),
            0xda => usize::from(self.be_u16()?),
            0xdb => self.be_u32()? as usize,
            _ => return Err("expected a str"),
        })
    }

    /// Reads a str, borrowed from the body.
    pub(crate) fn str(&mut self) -> Result<&'a str, Reason> {
        let n = self.str_len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| "str is not valid UTF-8")
    }

    /// Reads a bin, borrowed from the body.
    pub(crate) fn bin(&mut self) -> Result<&'a [u8], Reason> {
        let m = self.byte()?;
        let n = match m {
            0xc4 => usize::from(self.byte()?),
            0xc5 => usize::from(self.be_u16()?),
            0xc6 => self.be_u32()? as usize,
            _ => return Err("expected a bin"),
        };
        self.take(n)
    }

    /// Reads a 16-byte bin as an event id.
    pub(crate) fn event_id(&mut self) -> Result<EventId, Reason> {
        <[u8; 16]>::try_from(self.bin()?)
            .map(EventId)
            .map_err(|_| "event id is not 16 bytes")
    }

    /// Reads an array header.
    pub(crate) fn array_len(&mut self) -> Result<usize, Reason> {
        let m = self.byte()?;
        Ok(match m {
            0x90..=0x9f => usize::from(m & 0x0f),
            0xdc => usize::from(self.be_u16()?),
            0xdd => self.be_u32()? as usize,
            _ => return Err("expected an array"),
        })
    }

    /// Reads a map header.
    pub(crate) fn map_len(&mut self) -> Result<usize, Reason> {
        let m = self.byte()?;
        Ok(match m {
            0x80..=0x8f => usize::from(m & 0x0f),
            0xde => usize::from(self.be_u16()?),
            0xdf => self.be_u32()? as usize,
            _ => return Err("expected a map"),
        })
    }

    /// Skips one value of any type, however nested, without recursion: it
    /// counts the values still owed instead, so hostile nesting costs
    /// neither stack nor memory.
    pub(crate) fn skip(&mut self) -> Result<(), Reason> {
        let mut owed: u64 = 1;
        while owed > 0 {
            owed -= 1;
            let m = self.byte()?;
            let (children, bytes): (u64, usize) = match m {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (2 * u64::from(m & 0x0f), 0),
                0x90..=0x9f => (u64::from(m & 0x0f), 0),
                0xa0..=0xbf => (0, usize::from(m & 0x1f)),
                0xc4 | 0xd9 => (0, usize::from(self.byte()?)),
                0xc5 | 0xda => (0, usize::from(self.be_u16()?)),
                0xc6 | 0xdb => (0, self.be_u32()? as usize),
                // ext: length, then a type byte, then the data
                0xc7 => (0, usize::from(self.byte()?) + 1),
                0xc8 => (0, usize::from(self.be_u16()?) + 1),
                0xc9 => (0, self.be_u32()? as usize + 1),
                0xca => (0, 4),
                0xcb => (0, 8),
                0xcc | 0xd0 => (0, 1),
                0xcd | 0xd1 => (0, 2),
                0xce | 0xd2 => (0, 4),
                0xcf | 0xd3 => (0, 8),
                0xd4 => (0, 2),
                0xd5 => (0, 3),
                0xd6 => (0, 5),
                0xd7 => (0, 9),
                0xd8 => (0, 17),
                0xdc => (u64::from(self.be_u16()?), 0),
                0xdd => (u64::from(self.be_u32()?), 0),
                0xde => (2 * u64::from(self.be_u16()?), 0),
                0xdf => (2 * u64::from(self.be_u32()?), 0),
                // 0xc1 is never used
                _ => return Err("invalid MessagePack marker"),
            };
            self.take(bytes)?;
            owed += children;
            // Every value takes at least a byte: owing more than is left
            // can only end in "unexpected end"; say so now rather than
            // after counting down billions of phantom elements.
            if owed > self.buf.len() as u64 {
                return Err("unexpected end of body");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The hand-written writers produce exactly what rmp writes, and the
        /// reader reads back what rmp writes in any form.
        #[test]
        fn primitives_match_rmp(u in any::<u64>(), i in any::<i64>(), s in "\\PC{0,300}", b in prop::collection::vec(any::<u8>(), 0..70_000), n in 0usize..100_000) {
            let mut ours = BytesMut::new();
            put_uint(&mut ours, u);
            put_sint(&mut ours, i);
            put_str(&mut ours, &s);
            put_bin(&mut ours, &b);
            put_array_len(&mut ours, n);
            let mut theirs = Vec::new();
            rmp::encode::write_uint(&mut theirs, u).unwrap();
            rmp::encode::write_sint(&mut theirs, i).unwrap();
            rmp::encode::write_str(&mut theirs, &s).unwrap();
            rmp::encode::write_bin(&mut theirs, &b).unwrap();
            rmp::encode::write_array_len(&mut theirs, n as u32).unwrap();
            prop_assert_eq!(&ours[..], &theirs[..]);

            let mut r = Reader::new(&theirs);
            prop_assert_eq!(r.uint().unwrap(), u);
            prop_assert_eq!(r.sint().unwrap(), i);
            prop_assert_eq!(r.str().unwrap(), s.as_str());
            prop_assert_eq!(r.bin().unwrap(), &b[..]);
            prop_assert_eq!(r.array_len().unwrap(), n);
            prop_assert_eq!(r.remaining(), 0);
        }

        /// Non-minimal integer encodings are read too.
        #[test]
        fn wide_integers_are_accepted(v in any::<u32>()) {
            let mut buf = Vec::new();
            rmp::encode::write_u64(&mut buf, u64::from(v)).unwrap();
            rmp::encode::write_i64(&mut buf, i64::from(v)).unwrap();
            rmp::encode::write_i32(&mut buf, -(v as i32 & 0x7fff_ffff)).unwrap();
            let mut r = Reader::new(&buf);
            prop_assert_eq!(r.uint().unwrap(), u64::from(v));
            prop_assert_eq!(r.uint().unwrap(), u64::from(v));
            prop_assert_eq!(r.sint().unwrap(), -i64::from(v as i32 & 0x7fff_ffff));
        }

        /// `skip` consumes exactly one value of any shape serde can write.
        #[test]
        fn skip_consumes_one_value(
            v in prop::collection::vec(
                (any::<i64>(), "\\PC{0,8}", prop::option::of(any::<f64>()), any::<bool>()), 0..8),
            tail in any::<u8>(),
        ) {
            let mut buf = rmp_serde::to_vec_named(&v).unwrap();
            let len = buf.len();
            buf.push(tail);
            let mut r = Reader::new(&buf);
            r.skip().unwrap();
            prop_assert_eq!(r.remaining(), buf.len() - len);
        }

        /// Nothing a reader is fed makes it panic.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Reader::new(&bytes).skip();
            let mut r = Reader::new(&bytes);
            let _ = (r.map_len(), r.str(), r.bin(), r.uint(), r.sint(), r.opt_uint(), r.event_id());
        }
    }

    #[test]
    fn skip_handles_exts_and_hostile_counts() {
        // fixext4, ext8(3), then nil
        let buf = [0xd6, 1, 0, 0, 0, 0, 0xc7, 3, 9, 1, 2, 3, 0xc0];
        let mut r = Reader::new(&buf);
        r.skip().unwrap();
        r.skip().unwrap();
        r.skip().unwrap();
        assert_eq!(r.remaining(), 0);
        // An array claiming 2^32 - 1 elements with nothing behind it.
        assert!(Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]).skip().is_err());
        // A million levels of nesting.
        let deep = vec![0x91; 1_000_000];
        assert!(Reader::new(&deep).skip().is_err());
        let mut deep = deep;
        deep.push(0xc0);
        Reader::new(&deep).skip().unwrap();
        assert!(Reader::new(&[0xc1]).skip().is_err());
    }
}
