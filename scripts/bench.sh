#!/usr/bin/env bash
# The benchmark: two real daemons in network namespaces against the emulated clouds, keepalived
# beside cloudha on the same moto; prints the machine and a markdown table of medians.
# Usage: scripts/bench.sh [--runs N] [--scale-runs N] [--idle-secs N] [--only idle,azure,network_rp,scale,aws]
# Takes about 15 minutes with the defaults (5 runs, 3 at 500 routes, three 120 s idle windows) plus the Network RP section (about 8 minutes a run).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: scripts/bench.sh [--runs N] [--scale-runs N] [--idle-secs N] [--only idle,azure,network_rp,scale,aws]" >&2
  exit 2
}
runs=5 scale_runs=3 idle_secs=120 only=idle,azure,network_rp,scale,aws
while (($# > 0)); do
  case $1 in
    --runs) runs=${2:-}; shift 2 || usage ;;
    --scale-runs) scale_runs=${2:-}; shift 2 || usage ;;
    --idle-secs) idle_secs=${2:-}; shift 2 || usage ;;
    --only) only=${2:-}; shift 2 || usage ;;
    -h | --help) usage ;;
    *) echo "scripts/bench.sh: unknown argument $1" >&2; usage ;;
  esac
done
for n in "$runs" "$scale_runs" "$idle_secs"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "scripts/bench.sh: $n is not a positive number" >&2; usage; }
done

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/bench.sh: the benchmark creates network namespaces; run it as root" >&2
  exit 1
fi
scripts/install-deps.sh
# Only the benchmark needs these, so CI (scripts/test.sh) does not install them: keepalived for
# the side-by-side, and the AWS CLI its notify script moves the IP with, in moto's venv.
if [[ ! -x /usr/sbin/keepalived ]]; then
  echo "installing: keepalived"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends keepalived >/dev/null
fi
if [[ ! -x /opt/cloudha-venv/bin/aws ]]; then
  echo "installing: awscli in /opt/cloudha-venv"
  /opt/cloudha-venv/bin/python -m pip install --quiet --disable-pip-version-check awscli
fi
# The package's service must not run in the host namespace: only the benchmark's copies do.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet keepalived 2>/dev/null; then
  echo "scripts/bench.sh: a keepalived service is running on this machine; stop it first" >&2
  exit 1
fi

export CLOUDHA_BENCH_RUNS=$runs CLOUDHA_BENCH_SCALE_RUNS=$scale_runs CLOUDHA_BENCH_IDLE_SECS=$idle_secs
export CLOUDHA_BENCH_ONLY=$only
cargo test --release --test all bench -- --ignored --nocapture --test-threads 1
