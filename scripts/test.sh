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

# command:package pairs for the tools the tests use.
missing=()
for pair in ip:iproute2 ping:iputils-ping arping:iputils-arping nft:nftables \
  python3:python3 shellcheck:shellcheck tc:iproute2; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]} > 0)); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "scripts/test.sh: needs a Rust toolchain with cargo (https://rustup.rs)" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== shellcheck"
shellcheck -x scripts/*.sh .ci/run
echo "== cargo test"
cargo test --workspace --no-fail-fast
