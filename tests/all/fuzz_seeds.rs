//! The committed fuzz seeds (`fuzz/seeds/`) stay meaningful: each decodes or parses as the
//! fuzz targets expect, so a format change that orphans them fails here and not silently in a
//! later fuzzing session (CI does not run the fuzzers).

use std::path::Path;

use cloudha::config::Config;
use cloudha::keepalive::packet::Keepalive;

/// The key `fuzz/fuzz_targets/keepalive_decode.rs` decodes with.
const FUZZ_KEY: &[u8] = b"cloudha-fuzz-key-0123456789abcdef";

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            let bytes = std::fs::read(&path).expect("read seed");
            (path.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

#[test]
fn keepalive_seeds_decode_and_re_encode_byte_for_byte() {
    for (name, bytes) in seeds("keepalive_decode") {
        let packet = Keepalive::decode(&bytes, FUZZ_KEY)
            .unwrap_or_else(|e| panic!("{name} does not decode: {e}"));
        assert_eq!(packet.encode(FUZZ_KEY), bytes, "{name}");
        assert_eq!(packet.node_name, "fw-a", "{name}");
    }
}

#[test]
fn config_seeds_parse_and_validate() {
    for (name, bytes) in seeds("config_parse") {
        let text = String::from_utf8(bytes).expect("UTF-8 seed");
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(config.validate(), Vec::new(), "{name}");
    }
}
