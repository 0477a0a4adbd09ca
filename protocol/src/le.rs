//! Little-endian integer fields of frames and on-disk structures, read
//! without panicking: a slice too short yields `None` (or 0 from the plain
//! forms, for structures whose length the caller has already checked).
//! The one home of these helpers: the frame codec here and every on-disk
//! format of `logbook-storage` read their fields through them.

/// The `u16` at `at`, if `b` holds it.
pub fn try_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// The `u32` at `at`, if `b` holds it.
pub fn try_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The `u64` at `at`, if `b` holds it.
pub fn try_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The `u16` at `at`, or 0 if `b` is too short.
pub fn u16(b: &[u8], at: usize) -> u16 {
    try_u16(b, at).unwrap_or(0)
}

/// The `u32` at `at`, or 0 if `b` is too short.
pub fn u32(b: &[u8], at: usize) -> u32 {
    try_u32(b, at).unwrap_or(0)
}

/// The `u64` at `at`, or 0 if `b` is too short.
pub fn u64(b: &[u8], at: usize) -> u64 {
    try_u64(b, at).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_and_bounds() {
        let b = [1u8, 0, 0, 0, 0, 0, 0, 0, 2];
        assert_eq!(super::try_u16(&b, 0), Some(1));
        assert_eq!(super::try_u32(&b, 0), Some(1));
        assert_eq!(super::try_u64(&b, 1), Some(2 << 56));
        assert_eq!(super::try_u64(&b, 2), None);
        assert_eq!(super::try_u32(&b, usize::MAX), None);
        assert_eq!(super::u32(&b, 7), 0);
    }
}
