#!/usr/bin/env bash
# The fault campaign: two real daemons in network namespaces against the emulated Azure, a
# seeded random schedule of faults per run, invariants checked every 100 ms.
#
#   scripts/campaign.sh                 100 seeds from 1
#   scripts/campaign.sh --seeds 1000    1000 seeds from 1 (--first N to start elsewhere)
#   scripts/campaign.sh --seed 17       one seed, e.g. to reproduce a failure
#   scripts/campaign.sh --aws ...       the same against AWS as moto emulates it
#
# Prints one line per seed, the schedule, a timeline and the daemons' logs for a failing
# seed, and a summary. Needs root (network namespaces); see docs/README-campaign.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

seeds=100
first=1
seed=
backend=azure
while (($# > 0)); do
  case $1 in
    --seeds) seeds=${2:?--seeds needs a count}; shift 2 ;;
    --first) first=${2:?--first needs a seed}; shift 2 ;;
    --seed) seed=${2:?--seed needs a seed}; shift 2 ;;
    --aws) backend=aws; shift ;;
    -h | --help) usage ;;
    *) echo "scripts/campaign.sh: unknown argument $1" >&2; usage ;;
  esac
done
for n in "$seeds" "$first" ${seed:+"$seed"}; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "scripts/campaign.sh: $n is not a number" >&2; exit 2; }
done
if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/campaign.sh: the campaign creates network namespaces; run it as root" >&2
  exit 1
fi

scripts/install-deps.sh
export CLOUDHA_CAMPAIGN_BACKEND=$backend
if [[ -n $seed ]]; then
  export CLOUDHA_CAMPAIGN_SEED=$seed
else
  export CLOUDHA_CAMPAIGN_SEEDS=$seeds CLOUDHA_CAMPAIGN_FIRST=$first
fi
exec cargo test --test all campaign_full -- --ignored --nocapture
