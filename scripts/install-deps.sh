#!/usr/bin/env bash
# Installs (as root, with apt) the tools the demo and the tests use, if any is missing.
# Usage: scripts/install-deps.sh
set -euo pipefail

# command:package pairs.
missing=()
for pair in ip:iproute2 tc:iproute2 ping:iputils-ping arping:iputils-arping nft:nftables \
  python3:python3 shellcheck:shellcheck; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: needs a Rust toolchain with cargo (https://rustup.rs)" >&2
  exit 1
fi
