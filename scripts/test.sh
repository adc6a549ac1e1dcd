#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the tests need (as root),
# then runs formatting, lints and every test (unit, golden, property, end-to-end in network
# namespaces). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/test.sh: the end-to-end tests create network namespaces; run it as root" >&2
  exit 1
fi

scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== shellcheck"
shellcheck -x scripts/*.sh .ci/run deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm
echo "== cargo test"
cargo test --workspace --no-fail-fast
