//! Arbitrary text into the config parser and, when it parses, the semantic validation: neither
//! may panic, and every error must name a field (a dotted path, `.` for the whole file) and say
//! something about it.
#![no_main]

use cloudha::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Err((field, message)) => {
            assert!(!field.is_empty(), "parse error without a field: {message}");
            assert!(!message.trim().is_empty(), "parse error for {field} without a message");
        }
        Ok(config) => {
            let problems = config.validate();
            for problem in &problems {
                assert!(!problem.field.is_empty(), "problem without a field: {problem:?}");
                assert!(!problem.message.trim().is_empty(), "problem without a message: {problem:?}");
            }
            if problems.is_empty() {
                // What the daemon derives from a valid config must not panic either.
                let _ = config.ha_digest();
                let _ = config.floating_ips();
                let _ = config.route_specs();
                let _ = config.azure_floating_ips();
                let _ = config.aws_elastic_ips();
            }
        }
    }
});
