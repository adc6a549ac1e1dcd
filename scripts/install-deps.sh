#!/usr/bin/env bash
# Installs (as root, with apt and pip) the tools the demo and the tests use, if any is missing.
# Quiet when everything is already there.
# Usage: scripts/install-deps.sh          everything the tests use (scripts/test.sh)
#        scripts/install-deps.sh --demo   only what scripts/demo.sh uses: ip, ping, python3 and
#                                         cargo (no venv, no cargo-deb, no Prometheus or lintian)
set -euo pipefail

DEMO_ONLY=false
for arg in "$@"; do
  case $arg in
    --demo) DEMO_ONLY=true ;;
    *) echo "install-deps: unknown argument $arg (use --demo or nothing)" >&2; exit 2 ;;
  esac
done

# moto, the EC2 API server the AWS provider's tests run against, and the AWS CLI the AWS
# walk-through (scripts/aws-walkthrough.sh) and the benchmark's keepalived notify script drive it
# with, and the Prometheus project's Python text parser the metrics test scrapes with. Pinned: moto's quirks are documented in providers/aws/README.md and the tests depend on them.
# The official Azure SDK for Python (azure-mgmt-network on azure-mgmt-core / azure-core, isodate
# for its model serializer) drives the Azure emulator in
# providers/azure-emulator/tests/sdk/check_emulator_with_sdk.py, so the emulator is checked against
# a client the project did not write (its LRO polling, ETag handling, error parsing).
VENV_PACKAGES=("moto[server]==5.2.5" "awscli==1.46.3" "prometheus-client==0.26.0"
  "azure-core==1.41.0" "azure-mgmt-core==1.6.0" "azure-mgmt-network==33.1.0" "isodate==0.7.2")
# A venv, because Debian's python3 is "externally managed" (PEP 668) and refuses a global pip
# install. The tests look for moto_server here (or wherever CLOUDHA_MOTO_SERVER points).
MOTO_VENV=/opt/cloudha-venv

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing $*; run as root to install it" >&2
    exit 1
  fi
}

apt_updated=false
apt_install() {
  need_root "$@"
  echo "installing: $*"
  if [[ $apt_updated == false ]]; then
    apt-get update -qq
    apt_updated=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# command:package pairs: the demo's, then the tests'.
DEMO_TOOLS=(ip:iproute2 ping:iputils-ping python3:python3)
TEST_TOOLS=(tc:iproute2 arping:iputils-arping nft:nftables shellcheck:shellcheck
  systemd-analyze:systemd pgrep:procps prometheus:prometheus promtool:prometheus
  lintian:lintian strip:binutils)
tools=("${DEMO_TOOLS[@]}")
[[ $DEMO_ONLY == true ]] || tools+=("${TEST_TOOLS[@]}")
missing=()
for pair in "${tools[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if ((${#missing[@]} > 0)); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  apt_install "${missing[@]}"
  # Debian's prometheus package starts a server on *:9090 where systemd runs. The tests only
  # need the binaries (tests/all/monitoring.rs runs its own on 127.0.0.1 with a temp storage
  # dir): the service we just installed is stopped and disabled.
  if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

if [[ $DEMO_ONLY == true ]]; then
  if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: the demo needs a Rust toolchain with cargo (https://rustup.rs)" >&2
    exit 1
  fi
  exit 0
fi

# True when every pinned package is installed in the venv at its pinned version.
venv_complete() {
  [[ -x $MOTO_VENV/bin/python ]] &&
    "$MOTO_VENV/bin/python" - "${VENV_PACKAGES[@]}" <<'PY' 2>/dev/null
import importlib.metadata, sys
for spec in sys.argv[1:]:
    name, version = spec.split("==")
    if importlib.metadata.version(name.split("[")[0]) != version:
        sys.exit(1)
PY
}
if ! venv_complete; then
  need_root "${VENV_PACKAGES[*]} in $MOTO_VENV"
  # Debian's own interpreter when there is one: the venv must not depend on a user's pyenv.
  python=/usr/bin/python3
  [[ -x $python ]] || python=$(command -v python3)
  # Debian splits venv and pip out of python3.
  if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install python3-venv python3-pip
  fi
  echo "installing: ${VENV_PACKAGES[*]} in $MOTO_VENV"
  [[ -x $MOTO_VENV/bin/python ]] || "$python" -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${VENV_PACKAGES[@]}"
  venv_complete || {
    echo "install-deps: ${VENV_PACKAGES[*]} did not install into $MOTO_VENV" >&2
    exit 1
  }
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: needs a Rust toolchain with cargo (https://rustup.rs)" >&2
  exit 1
fi

# cargo-deb builds the Debian package (scripts/package-deb.sh, tests/all/package_deb.rs), pinned
# and in its own root so no other cargo install can change it.
CARGO_DEB_VERSION=3.8.0
CARGO_DEB_ROOT=/opt/cargo-deb
if ! "$CARGO_DEB_ROOT/bin/cargo-deb" --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  need_root "cargo-deb $CARGO_DEB_VERSION in $CARGO_DEB_ROOT"
  echo "installing: cargo-deb $CARGO_DEB_VERSION in $CARGO_DEB_ROOT"
  cargo install --quiet --locked --version "$CARGO_DEB_VERSION" --root "$CARGO_DEB_ROOT" cargo-deb
fi
