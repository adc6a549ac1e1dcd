//! Arbitrary datagrams into the keepalive decoder with a fixed key: it must never panic, and
//! whatever it accepts must re-encode to exactly the bytes it was given (the HMAC tag covers
//! every byte, so an accepted packet has exactly one encoding).
#![no_main]

use cloudha::keepalive::packet::Keepalive;
use libfuzzer_sys::fuzz_target;

/// The same fixed key the seeds in `fuzz/seeds/keepalive_decode/` are signed with.
const KEY: &[u8] = b"cloudha-fuzz-key-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Keepalive::decode(data, KEY) {
        assert_eq!(packet.encode(KEY), data, "accepted packet re-encodes differently");
    }
});
