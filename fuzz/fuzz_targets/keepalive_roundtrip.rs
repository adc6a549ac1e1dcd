//! Arbitrary field values, signed: decode(encode(x)) must give x back (strings longer than the
//! wire's 32 bytes come back cut at a char boundary, as `encode` documents), and the same
//! bytes under another key must be refused as unauthenticated.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use cloudha::fsm::{PeerAdvert, Role};
use cloudha::keepalive::packet::{DecodeError, Keepalive, MAX_STRING};
use libfuzzer_sys::fuzz_target;

const ROLES: [Role; 5] = [
    Role::Init,
    Role::Standby,
    Role::Active,
    Role::Fault,
    Role::Maintenance,
];

fn keepalive(u: &mut Unstructured<'_>) -> arbitrary::Result<Keepalive> {
    Ok(Keepalive {
        cluster_id: u.arbitrary()?,
        incarnation: u.arbitrary()?,
        sequence: u.arbitrary()?,
        path_id: u.arbitrary()?,
        advert: PeerAdvert {
            role: *u.choose(&ROLES)?,
            priority: u.arbitrary()?,
            epoch: u.arbitrary()?,
            takeover_in_progress: u.arbitrary()?,
            yielding: u.arbitrary()?,
            leaving: u.arbitrary()?,
        },
        wall_clock_ms: u.arbitrary()?,
        tx_timestamp_us: u.arbitrary()?,
        echo_timestamp_us: u.arbitrary()?,
        echo_delay_us: u.arbitrary()?,
        config_digest: u.arbitrary()?,
        node_name: u.arbitrary()?,
        software_version: u.arbitrary()?,
    })
}

/// What the wire keeps of a string: at most 32 bytes, cut at a char boundary.
fn wire(s: &str) -> String {
    let mut end = s.len().min(MAX_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(key) = <Vec<u8>>::arbitrary(&mut u) else {
        return;
    };
    let Ok(packet) = keepalive(&mut u) else {
        return;
    };
    let bytes = packet.encode(&key);
    let mut expected = packet.clone();
    expected.node_name = wire(&packet.node_name);
    expected.software_version = wire(&packet.software_version);
    assert_eq!(Keepalive::decode(&bytes, &key), Ok(expected));

    let mut other_key = key.clone();
    other_key.push(0x5a);
    assert_eq!(
        Keepalive::decode(&bytes, &other_key),
        Err(DecodeError::Unauthenticated)
    );
});
