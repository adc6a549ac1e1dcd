//! The keepalive wire format (no sockets here).
//!
//! One UDP datagram per keepalive, big-endian, authenticated with HMAC-SHA256 over everything
//! before the tag:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |       magic 'C' 'H'           |  version = 1  |     flags     |  0
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          cluster id                           |  4
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  incarnation (64, per boot)                   |  8
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  sequence (64, per path)                      | 16
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    path id    |     role      |   priority    |   reserved    | 24
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          epoch (64)                           | 28
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |              sender wall clock (64, Unix ms)                  | 36
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |              tx timestamp (64, sender monotonic µs)           | 44
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      echo timestamp (64, last tx timestamp heard, 0 = none)   | 52
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             echo delay (32, µs held before this send)         | 60
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  config digest (128 bits)                     | 64
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   name len N  |  version len V|  node name (N bytes) ...      | 80
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  ... software version (V bytes)                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          HMAC-SHA256 over all bytes above (256 bits)          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Flags: bit 0 takeover in progress, bit 1 yielding (handing over), bit 2 leaving (shutdown),
//! bit 3 planned (this active term began by a planned handover: preemption, operator
//! switchover, or the peer handing over or leaving; the node it relieved does not damp).
//! Other bits must be zero.
//!
//! Strings are printable ASCII (0x20..=0x7e), at most 32 bytes each; anything else is
//! `malformed_field`. They are still rendered through [`escape`] wherever they are printed.
//!
//! Freshness: the tx timestamp counts from a random per-boot offset, so an echo timestamp can
//! only match the receiver's current boot; the receiver acts on an advert only when it echoes
//! one of its own recent timestamps (proof of liveness, see `keepalive::link`).
//!
//! The tag is verified before any field after the version byte is trusted, so garbage and
//! forgeries are classified as `Unauthenticated` no matter what they contain. The echo fields
//! let each side measure the round-trip time without synchronised clocks (as BFD's echo does);
//! the wall clock lets each side estimate clock skew.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::fsm::{PeerAdvert, Role};

type HmacSha256 = Hmac<Sha256>;

/// `'C' 'H'`.
pub const MAGIC: [u8; 2] = *b"CH";
/// Wire version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes before the variable-length strings.
pub const FIXED_LEN: usize = 82;
/// HMAC-SHA256 tag length.
pub const TAG_LEN: usize = 32;
/// Longest string field (node name, software version).
pub const MAX_STRING: usize = 32;
/// The largest valid packet.
pub const MAX_LEN: usize = FIXED_LEN + 2 * MAX_STRING + TAG_LEN;

const FLAG_TAKEOVER: u8 = 1 << 0;
const FLAG_YIELDING: u8 = 1 << 1;
const FLAG_LEAVING: u8 = 1 << 2;
const FLAG_PLANNED: u8 = 1 << 3;
const KNOWN_FLAGS: u8 = FLAG_TAKEOVER | FLAG_YIELDING | FLAG_LEAVING | FLAG_PLANNED;

/// One keepalive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keepalive {
    /// The pair this packet belongs to.
    pub cluster_id: u32,
    /// Per-boot number of the sender; grows across restarts.
    pub incarnation: u64,
    /// Per-path sequence number; grows with every packet on the path.
    pub sequence: u64,
    /// Which path the sender meant it for (must match the path it arrived on).
    pub path_id: u8,
    /// The sender's role, priority, epoch and flags.
    pub advert: PeerAdvert,
    /// Sender's wall clock (Unix ms), for clock-skew estimates.
    pub wall_clock_ms: u64,
    /// Sender's monotonic time of sending (µs), echoed back by the receiver.
    pub tx_timestamp_us: u64,
    /// The last `tx_timestamp_us` the sender heard from us on this path (0: none).
    pub echo_timestamp_us: u64,
    /// How long the sender held that echo before sending (µs).
    pub echo_delay_us: u32,
    /// Digest of the HA-relevant configuration.
    pub config_digest: [u8; 16],
    /// Sender's node name.
    pub node_name: String,
    /// Sender's software version.
    pub software_version: String,
}

/// Why a datagram was not accepted as a keepalive. Each is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a minimal packet, longer than a maximal one, or lengths that do not add up.
    #[error("malformed length")]
    Length,
    /// Does not start with the magic bytes.
    #[error("bad magic")]
    Magic,
    /// A wire version this build does not speak.
    #[error("unsupported version")]
    Version,
    /// The HMAC tag does not match (wrong key, corruption or forgery).
    #[error("authentication failed")]
    Unauthenticated,
    /// Authenticated but with an unknown role, flag or non-UTF-8 string.
    #[error("malformed field")]
    Field,
}

impl DecodeError {
    /// Label used in status and metrics.
    pub fn label(self) -> &'static str {
        match self {
            DecodeError::Length => "malformed_length",
            DecodeError::Magic => "bad_magic",
            DecodeError::Version => "bad_version",
            DecodeError::Unauthenticated => "unauthenticated",
            DecodeError::Field => "malformed_field",
        }
    }
}

/// The HMAC keyed once: its inner and outer key blocks are hashed at creation, so each packet
/// costs only its own blocks (a fresh HMAC per packet hashed the key twice more).
#[derive(Clone)]
pub struct PacketKey(HmacSha256);

impl PacketKey {
    /// Key the HMAC.
    pub fn new(key: &[u8]) -> PacketKey {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        match HmacSha256::new_from_slice(key) {
            Ok(mac) => PacketKey(mac),
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        }
    }
}

impl std::fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PacketKey(..)")
    }
}

impl Keepalive {
    /// Serialise and sign. Strings longer than 32 bytes are truncated at a char boundary.
    pub fn encode(&self, key: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode_into(&PacketKey::new(key), &mut buf);
        buf
    }

    /// [`Keepalive::encode`] into `buf` (cleared first), with a key prepared once: the
    /// sender's per-packet path, which allocates nothing once `buf` has grown to a packet.
    pub fn encode_into(&self, key: &PacketKey, buf: &mut Vec<u8>) {
        let name = truncate(&self.node_name);
        let version = truncate(&self.software_version);
        buf.clear();
        buf.reserve(FIXED_LEN + name.len() + version.len() + TAG_LEN);
        buf.extend_from_slice(&MAGIC);
        buf.push(VERSION);
        let mut flags = 0;
        if self.advert.takeover_in_progress {
            flags |= FLAG_TAKEOVER;
        }
        if self.advert.yielding {
            flags |= FLAG_YIELDING;
        }
        if self.advert.leaving {
            flags |= FLAG_LEAVING;
        }
        if self.advert.planned {
            flags |= FLAG_PLANNED;
        }
        buf.push(flags);
        buf.extend_from_slice(&self.cluster_id.to_be_bytes());
        buf.extend_from_slice(&self.incarnation.to_be_bytes());
        buf.extend_from_slice(&self.sequence.to_be_bytes());
        buf.push(self.path_id);
        buf.push(self.advert.role.to_byte());
        buf.push(self.advert.priority);
        buf.push(0);
        buf.extend_from_slice(&self.advert.epoch.to_be_bytes());
        buf.extend_from_slice(&self.wall_clock_ms.to_be_bytes());
        buf.extend_from_slice(&self.tx_timestamp_us.to_be_bytes());
        buf.extend_from_slice(&self.echo_timestamp_us.to_be_bytes());
        buf.extend_from_slice(&self.echo_delay_us.to_be_bytes());
        buf.extend_from_slice(&self.config_digest);
        // Both lengths fit a byte: `truncate` caps them at 32.
        buf.push(name.len() as u8);
        buf.push(version.len() as u8);
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(version.as_bytes());
        let mut mac = key.0.clone();
        mac.update(buf);
        buf.extend_from_slice(&mac.finalize().into_bytes());
    }

    /// Parse and authenticate a datagram.
    pub fn decode(bytes: &[u8], key: &[u8]) -> Result<Keepalive, DecodeError> {
        Keepalive::decode_with(bytes, &PacketKey::new(key))
    }

    /// [`Keepalive::decode`] with a key prepared once (the receiver's path).
    pub fn decode_with(bytes: &[u8], key: &PacketKey) -> Result<Keepalive, DecodeError> {
        if bytes.len() < FIXED_LEN + TAG_LEN || bytes.len() > MAX_LEN {
            return Err(DecodeError::Length);
        }
        if bytes[0..2] != MAGIC {
            return Err(DecodeError::Magic);
        }
        if bytes[2] != VERSION {
            return Err(DecodeError::Version);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mut mac = key.0.clone();
        mac.update(body);
        mac.verify_slice(tag)
            .map_err(|_| DecodeError::Unauthenticated)?;

        let mut r = Reader { buf: body, pos: 3 };
        let flags = r.u8()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(DecodeError::Field);
        }
        let cluster_id = r.u32()?;
        let incarnation = r.u64()?;
        let sequence = r.u64()?;
        let path_id = r.u8()?;
        let role = Role::from_byte(r.u8()?).ok_or(DecodeError::Field)?;
        let priority = r.u8()?;
        let _reserved = r.u8()?;
        let epoch = r.u64()?;
        let wall_clock_ms = r.u64()?;
        let tx_timestamp_us = r.u64()?;
        let echo_timestamp_us = r.u64()?;
        let echo_delay_us = r.u32()?;
        let config_digest: [u8; 16] = r.take(16)?.try_into().map_err(|_| DecodeError::Length)?;
        let name_len = usize::from(r.u8()?);
        let version_len = usize::from(r.u8()?);
        if name_len > MAX_STRING
            || version_len > MAX_STRING
            || r.remaining() != name_len + version_len
        {
            return Err(DecodeError::Length);
        }
        let node_name = printable(r.take(name_len)?)?;
        let software_version = printable(r.take(version_len)?)?;
        Ok(Keepalive {
            cluster_id,
            incarnation,
            sequence,
            path_id,
            advert: PeerAdvert {
                role,
                priority,
                epoch,
                takeover_in_progress: flags & FLAG_TAKEOVER != 0,
                yielding: flags & FLAG_YIELDING != 0,
                leaving: flags & FLAG_LEAVING != 0,
                planned: flags & FLAG_PLANNED != 0,
            },
            wall_clock_ms,
            tx_timestamp_us,
            echo_timestamp_us,
            echo_delay_us,
            config_digest,
            node_name,
            software_version,
        })
    }
}

/// A peer-supplied string: printable ASCII only (no control characters, no escape sequences,
/// no newlines that could forge a line in status or the journal).
fn printable(bytes: &[u8]) -> Result<String, DecodeError> {
    if bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        // Printable ASCII is valid UTF-8.
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| DecodeError::Field)
    } else {
        Err(DecodeError::Field)
    }
}

/// Render a peer-supplied string for humans, logs and metrics labels: printable ASCII other
/// than `\` and `"` as is, everything else escaped (`\n`, `\u{1b}`, ...), at most
/// [`MAX_STRING`] characters of input. Decode already refuses such strings; this is the second
/// line, used wherever a peer string is printed.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().take(MAX_STRING) {
        match c {
            ' '..='~' if c != '\\' && c != '"' => out.push(c),
            _ => out.extend(c.escape_default()),
        }
    }
    out
}

fn truncate(s: &str) -> &str {
    if s.len() <= MAX_STRING {
        return s;
    }
    let mut end = MAX_STRING;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Length)?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::Length)?;
        self.pos = end;
        Ok(slice)
    }
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut out = [0u8; 8];
        out.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(out))
    }
}

/// Why an authenticated keepalive was still not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// Failed to decode or authenticate.
    Decode(DecodeError),
    /// Another cluster id (a second pair on the same network).
    ForeignCluster,
    /// A sender name other than the configured peer (or our own name reflected back).
    UnknownSender,
    /// Sent for another path than the one it arrived on.
    WrongPath,
    /// An old incarnation or a sequence number already seen: a replay or a stale packet.
    Replayed,
    /// Does not echo one of this node's recent timestamps of this boot: no proof that the
    /// sender is alive now (a new peer's first packets, or a replay of a captured one).
    Unproven,
    /// No proof of liveness, and sent (by its wall clock) longer ago than the dead interval plus
    /// the allowed clock skew.
    Stale,
}

impl Rejection {
    /// Label used in status and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Decode(e) => e.label(),
            Rejection::ForeignCluster => "foreign_cluster",
            Rejection::UnknownSender => "unknown_sender",
            Rejection::WrongPath => "wrong_path",
            Rejection::Replayed => "replayed",
            Rejection::Unproven => "unproven",
            Rejection::Stale => "stale",
        }
    }
}

/// What an accepted packet says about the peer's boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The boot already heard on this path (or the first heard at or above the floor).
    Current,
    /// A newer incarnation: the peer restarted.
    NewBoot,
    /// A lower incarnation than the highest ever seen, proven alive: the peer lost its state
    /// directory and its clock is behind the previous boot's.
    Backwards,
}

/// Rejects replayed and stale packets on one path: accepts only `(incarnation, sequence)`
/// strictly greater than the last accepted one within a boot, and a change of boot only from a
/// packet that proves liveness (echoes one of this node's recent timestamps of this boot).
///
/// `floor` is the highest incarnation ever accepted from the peer, persisted across this
/// node's restarts: without it a restarted node would take a recording of any earlier boot as
/// the peer's current one. A lower incarnation is still accepted when proven: the peer lost its
/// state and its clock is behind, and its packets echo what this node sent moments ago, which
/// no recording can.
#[derive(Debug, Clone, Default)]
pub struct ReplayGuard {
    last: Option<(u64, u64)>,
    floor: u64,
}

impl ReplayGuard {
    /// A guard that takes incarnations below `floor` for replays unless proven.
    pub fn seeded(floor: u64) -> ReplayGuard {
        ReplayGuard { last: None, floor }
    }

    /// Accept and remember, or reject. Unproven packets are never remembered.
    pub fn check(
        &mut self,
        incarnation: u64,
        sequence: u64,
        proven: bool,
    ) -> Result<Accepted, Rejection> {
        let outcome = match self.last {
            Some((last_inc, last_seq)) if incarnation == last_inc => {
                if sequence <= last_seq {
                    return Err(Rejection::Replayed);
                }
                Accepted::Current
            }
            Some((last_inc, _)) if incarnation > last_inc => Accepted::NewBoot,
            Some(_) => Accepted::Backwards,
            None if incarnation < self.floor => Accepted::Backwards,
            None if incarnation > self.floor && self.floor != 0 => Accepted::NewBoot,
            None => Accepted::Current,
        };
        if !proven {
            return Err(match outcome {
                Accepted::Backwards => Rejection::Replayed,
                _ => Rejection::Unproven,
            });
        }
        self.last = Some((incarnation, sequence));
        Ok(outcome)
    }

    /// The last accepted `(incarnation, sequence)`.
    pub fn last(&self) -> Option<(u64, u64)> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    pub(crate) fn sample() -> Keepalive {
        Keepalive {
            cluster_id: 0x0102_0304,
            incarnation: 0x1122_3344_5566_7788,
            sequence: 42,
            path_id: 1,
            advert: PeerAdvert {
                role: Role::Active,
                priority: 200,
                epoch: 7,
                takeover_in_progress: true,
                yielding: false,
                leaving: true,
                planned: false,
            },
            wall_clock_ms: 1_700_000_000_000,
            tx_timestamp_us: 5_000_000,
            echo_timestamp_us: 4_900_000,
            echo_delay_us: 1234,
            config_digest: [0xAB; 16],
            node_name: "fw-a".into(),
            software_version: "0.1.0".into(),
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn encodes_byte_for_byte() {
        let bytes = sample().encode(KEY);
        let body = concat!(
            "4348",
            "01",
            "05",               // magic, version, flags (takeover | leaving)
            "01020304",         // cluster id
            "1122334455667788", // incarnation
            "000000000000002a", // sequence 42
            "01",
            "02",
            "c8",
            "00",                               // path 1, active, priority 200, reserved
            "0000000000000007",                 // epoch 7
            "0000018bcfe56800",                 // wall clock 1_700_000_000_000 ms
            "00000000004c4b40",                 // tx timestamp 5_000_000 µs
            "00000000004ac4a0",                 // echo timestamp 4_900_000 µs
            "000004d2",                         // echo delay 1234 µs
            "abababababababababababababababab", // config digest
            "04",
            "05",         // name and version lengths
            "66772d61",   // "fw-a"
            "302e312e30", // "0.1.0"
        );
        assert_eq!(hex(&bytes[..bytes.len() - TAG_LEN]), body);
        assert_eq!(bytes.len(), FIXED_LEN + 4 + 5 + TAG_LEN);
        // The tag is HMAC-SHA256(KEY, body), checked against an independent computation.
        let mut mac = PacketKey::new(KEY).0;
        mac.update(&bytes[..bytes.len() - TAG_LEN]);
        assert_eq!(
            &bytes[bytes.len() - TAG_LEN..],
            mac.finalize().into_bytes().as_slice()
        );
    }

    #[test]
    fn round_trips() {
        let packet = sample();
        assert_eq!(Keepalive::decode(&packet.encode(KEY), KEY), Ok(packet));
    }

    #[test]
    fn a_reused_key_and_buffer_sign_each_packet_as_a_fresh_one() {
        // The sender keeps one keyed HMAC and one buffer: the HMAC state must not carry over
        // from one packet to the next, nor bytes of a longer earlier packet.
        let key = PacketKey::new(KEY);
        let mut buf = Vec::new();
        let mut longer = sample();
        longer.software_version = "a-much-longer-version-string-0001".into();
        longer.encode_into(&key, &mut buf);
        for sequence in [7, 8] {
            let mut packet = sample();
            packet.sequence = sequence;
            packet.encode_into(&key, &mut buf);
            assert_eq!(buf, packet.encode(KEY));
            assert_eq!(Keepalive::decode_with(&buf, &key), Ok(packet));
        }
    }

    #[test]
    fn wrong_key_is_unauthenticated() {
        let bytes = sample().encode(KEY);
        assert_eq!(
            Keepalive::decode(&bytes, b"another key of enough length!!"),
            Err(DecodeError::Unauthenticated)
        );
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let bytes = sample().encode(KEY);
        for i in 0..bytes.len() * 8 {
            let mut corrupt = bytes.clone();
            corrupt[i / 8] ^= 1 << (i % 8);
            assert!(
                Keepalive::decode(&corrupt, KEY).is_err(),
                "bit {i} flip accepted"
            );
        }
    }

    #[test]
    fn classifies_malformed_input() {
        let bytes = sample().encode(KEY);
        assert_eq!(Keepalive::decode(&[], KEY), Err(DecodeError::Length));
        assert_eq!(
            Keepalive::decode(&bytes[..50], KEY),
            Err(DecodeError::Length)
        );
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(Keepalive::decode(&magic, KEY), Err(DecodeError::Magic));
        let mut version = bytes.clone();
        version[2] = 9;
        assert_eq!(Keepalive::decode(&version, KEY), Err(DecodeError::Version));
        let mut long = bytes.clone();
        long.resize(MAX_LEN + 1, 0);
        assert_eq!(Keepalive::decode(&long, KEY), Err(DecodeError::Length));
    }

    /// A packet signed with the right key but with inconsistent fields is still refused.
    #[test]
    fn authenticated_but_malformed_fields_are_refused() {
        let resign = |mut body: Vec<u8>| {
            let mut mac = PacketKey::new(KEY).0;
            mac.update(&body);
            body.extend_from_slice(&mac.finalize().into_bytes());
            body
        };
        let bytes = sample().encode(KEY);
        let body = bytes[..bytes.len() - TAG_LEN].to_vec();

        let mut bad_role = body.clone();
        bad_role[25] = 99;
        assert_eq!(
            Keepalive::decode(&resign(bad_role), KEY),
            Err(DecodeError::Field)
        );

        let mut bad_flags = body.clone();
        bad_flags[3] = 0x80;
        assert_eq!(
            Keepalive::decode(&resign(bad_flags), KEY),
            Err(DecodeError::Field)
        );

        let mut bad_len = body.clone();
        bad_len[80] = 30;
        assert_eq!(
            Keepalive::decode(&resign(bad_len), KEY),
            Err(DecodeError::Length)
        );

        let mut bad_utf8 = body;
        bad_utf8[82] = 0xFF;
        assert_eq!(
            Keepalive::decode(&resign(bad_utf8), KEY),
            Err(DecodeError::Field)
        );
    }

    #[test]
    fn long_strings_are_truncated_on_char_boundaries() {
        let mut packet = sample();
        packet.node_name = "x".repeat(40);
        let decoded = Keepalive::decode(&packet.encode(KEY), KEY).expect("decodes");
        assert_eq!(decoded.node_name, "x".repeat(32));
        // Non-ASCII is cut on a char boundary by the encoder (and refused by the decoder).
        assert_eq!(truncate(&"é".repeat(20)), "é".repeat(16));
    }

    #[test]
    fn replay_guard_orders_by_incarnation_then_sequence() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.check(5, 10, true), Ok(Accepted::Current));
        assert_eq!(guard.check(5, 10, true), Err(Rejection::Replayed));
        assert_eq!(guard.check(5, 9, true), Err(Rejection::Replayed));
        assert_eq!(guard.check(4, 1000, false), Err(Rejection::Replayed));
        assert_eq!(guard.check(5, 11, false), Err(Rejection::Unproven));
        assert_eq!(guard.check(5, 11, true), Ok(Accepted::Current));
        assert_eq!(
            guard.check(6, 0, false),
            Err(Rejection::Unproven),
            "a new boot is taken only with proof of liveness"
        );
        assert_eq!(
            guard.check(6, 0, true),
            Ok(Accepted::NewBoot),
            "a restarted peer starts a new incarnation"
        );
        assert_eq!(guard.last(), Some((6, 0)));
        assert_eq!(
            guard.check(3, 1, true),
            Ok(Accepted::Backwards),
            "a peer that lost its state is recovered through the proof"
        );
    }

    #[test]
    fn a_seeded_guard_refuses_older_boots_without_proof() {
        let mut guard = ReplayGuard::seeded(100);
        assert_eq!(guard.check(99, 5, false), Err(Rejection::Replayed));
        assert_eq!(guard.check(100, 5, false), Err(Rejection::Unproven));
        assert_eq!(guard.check(99, 5, true), Ok(Accepted::Backwards));
        let mut guard = ReplayGuard::seeded(100);
        assert_eq!(guard.check(101, 1, true), Ok(Accepted::NewBoot));
    }

    #[test]
    fn strings_must_be_printable_ascii_and_are_rendered_escaped() {
        for bad in ["0.1\n[ OK ]", "\u{1b}[2J", "caf\u{e9}", "a\u{7f}"] {
            let mut packet = sample();
            packet.software_version = bad.to_string();
            assert_eq!(
                Keepalive::decode(&packet.encode(KEY), KEY),
                Err(DecodeError::Field),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            escape("0.1\n[ OK ] \u{1b}[1m\"x\\"),
            "0.1\\n[ OK ] \\u{1b}[1m\\\"x\\\\"
        );
        assert_eq!(escape("1.2.3-rc1"), "1.2.3-rc1");
    }
}
