//! Bytes from the network, cut into frames and decoded as messages.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| logbook_protocol::fuzzing::frames(data));
