//! Arbitrary datagrams into the keepalive decoder with a fixed key: it must never panic, and
//! whatever it accepts must re-encode to the bytes it was given (the HMAC tag covers every byte;
//! only the reserved byte, which the decoder ignores for later use, may differ).
#![no_main]

use cloudha::keepalive::packet::{Keepalive, TAG_LEN};
use libfuzzer_sys::fuzz_target;

/// The same fixed key the seeds in `fuzz/seeds/keepalive_decode/` are signed with.
const KEY: &[u8] = b"cloudha-fuzz-key-0123456789abcdef";

/// The reserved byte after path id, role and priority (see the diagram in packet.rs).
const RESERVED_OFFSET: usize = 27;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Keepalive::decode(data, KEY) {
        let encoded = packet.encode(KEY);
        assert_eq!(encoded.len(), data.len(), "accepted packet re-encodes to another length");
        let differ: Vec<usize> = (0..data.len() - TAG_LEN)
            .filter(|&i| encoded[i] != data[i])
            .collect();
        assert!(
            differ.is_empty() || differ == [RESERVED_OFFSET],
            "accepted packet re-encodes differently at bytes {differ:?}"
        );
    }
});
