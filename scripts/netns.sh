#!/usr/bin/env bash
# Test topology in network namespaces, for shell use (the Rust twin is
# tests/all/netns.rs; keep the two in step).
#
#   ns a:  lan0 10.77.0.1/24   mgmt0 10.77.1.1/24 ─┐ (direct veth)
#   ns b:  lan0 10.77.0.2/24   mgmt0 10.77.1.2/24 ─┘
#   ns c:  lan0 10.77.0.10/24  (the client)
#   ns sw: bridge br0 with ports a-lan, b-lan, c-lan (the other ends of lan0)
#
# Source it and call:   topo_up TAG / topo_down TAG / in_ns NODE cmd...
# or run it:            scripts/netns.sh up|down TAG
# NODE is a, b, c or sw. Namespaces are named chs-TAG-NODE and are created
# from scratch; the root namespace's interfaces, addresses and routes are
# never touched (every veth is created directly inside a test namespace).

NETNS_TAG=${NETNS_TAG:-}
# A python3 behind a version-manager shim (pyenv) costs ~200 ms per start, which
# would blur polled timings: resolve the real interpreter once, at source time.
NETNS_PYTHON=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || NETNS_PYTHON=python3

# Namespace name of NODE in the current topology (the last topo_up's TAG).
ns_name() {
  [[ -n $NETNS_TAG ]] || { echo "netns.sh: no topology (call topo_up first)" >&2; return 1; }
  case $1 in
    a | b | c | sw) echo "chs-$NETNS_TAG-$1" ;;
    *) echo "netns.sh: unknown node '$1' (a, b, c or sw)" >&2; return 1 ;;
  esac
}

# Runs cmd... inside NODE's namespace.
in_ns() {
  local ns
  ns=$(ns_name "$1") || return 1
  shift
  ip netns exec "$ns" "$@"
}

# Runs a setup step, naming it on failure. Steps are chained with `|| return`
# rather than relying on `set -e`, which bash ignores inside functions called
# from `if` or `||`.
_netns_try() {
  "$@" || { echo "netns.sh: failed: $*" >&2; return 1; }
}

# Deletes TAG's namespaces (and with them every veth and the bridge).
topo_down() {
  local tag=${1:?usage: topo_down TAG} node
  for node in a b c sw; do
    if [[ -e /run/netns/chs-$tag-$node ]]; then
      ip netns del "chs-$tag-$node"
    fi
  done
  return 0
}

# Builds TAG's topology, first removing leftovers of a crashed earlier run.
topo_up() {
  local tag=${1:?usage: topo_up TAG} node ns sw ip
  [[ $tag =~ ^[a-z0-9_]{1,20}$ ]] || { echo "netns.sh: tag must be 1-20 chars of [a-z0-9_]" >&2; return 1; }
  topo_down "$tag"
  NETNS_TAG=$tag
  for node in a b c sw; do
    ns=chs-$tag-$node
    _netns_try ip netns add "$ns" || return 1
    _netns_try ip -n "$ns" link set lo up || return 1
  done
  sw=chs-$tag-sw
  # STP off: ports forward as soon as they come up.
  _netns_try ip -n "$sw" link add br0 type bridge stp_state 0 || return 1
  _netns_try ip -n "$sw" link set br0 up || return 1
  for node in a b c; do
    ns=chs-$tag-$node
    case $node in a) ip=10.77.0.1 ;; b) ip=10.77.0.2 ;; c) ip=10.77.0.10 ;; esac
    _netns_try ip -n "$ns" link add lan0 type veth peer name "$node-lan" netns "$sw" || return 1
    _netns_try ip -n "$sw" link set "$node-lan" master br0 || return 1
    _netns_try ip -n "$sw" link set "$node-lan" up || return 1
    _netns_try ip -n "$ns" addr add "$ip/24" dev lan0 || return 1
    _netns_try ip -n "$ns" link set lan0 up || return 1
    # Accept gratuitous ARP, so a moving floating IP is followed at once.
    _netns_try ip netns exec "$ns" sh -c \
      'echo 1 > /proc/sys/net/ipv4/conf/all/arp_accept && echo 1 > /proc/sys/net/ipv4/conf/lan0/arp_accept' || return 1
  done
  _netns_try ip -n "chs-$tag-a" link add mgmt0 type veth peer name mgmt0 netns "chs-$tag-b" || return 1
  _netns_try ip -n "chs-$tag-a" addr add 10.77.1.1/24 dev mgmt0 || return 1
  _netns_try ip -n "chs-$tag-b" addr add 10.77.1.2/24 dev mgmt0 || return 1
  _netns_try ip -n "chs-$tag-a" link set mgmt0 up || return 1
  _netns_try ip -n "chs-$tag-b" link set mgmt0 up || return 1
}

# Cuts (down) or restores (up) NODE's LAN path at its bridge port.
set_lan() {
  local sw
  sw=$(ns_name sw) || return 1
  ip -n "$sw" link set "$1-lan" "$2"
}

# MAC address of NODE's lan0.
lan_mac() {
  local ns
  ns=$(ns_name "$1") || return 1
  ip -n "$ns" -j link show lan0 | "$NETNS_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])'
}

# The MAC that NODE's neighbour table currently holds for ADDR (empty if none).
# Unlike the Rust answering_mac it does not flush first: it shows what NODE
# really uses, which gratuitous ARP keeps up to date.
neigh_mac() {
  local ns
  ns=$(ns_name "$1") || return 1
  ip -n "$ns" -j neigh show to "$2" dev lan0 |
    "$NETNS_PYTHON" -c 'import json,sys; print(next((e["lladdr"] for e in json.load(sys.stdin) if "lladdr" in e), ""))'
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  case ${1:-} in
    up) topo_up "${2:?usage: $0 up TAG}" ;;
    down) topo_down "${2:?usage: $0 down TAG}" ;;
    *) echo "usage: $0 up|down TAG   (or source it for topo_up/topo_down/in_ns)" >&2; exit 2 ;;
  esac
fi
