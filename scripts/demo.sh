#!/usr/bin/env bash
# The cloudha demo: two appliance nodes, fw-a and fw-b, in network namespaces, exchanging
# keepalives over a bridged LAN and a direct link; fw-a is killed (kill -9) and later comes back.
# Prints a timeline relative to start.
#
# Default: on the built-in emulated Azure (providers/azure-emulator, served inside the switch
# namespace at 10.77.0.254:8080). The nodes move the floating ipConfiguration 10.10.1.100 (with
# its public IP) between their NICs and point the route table's default route at themselves,
# through the same ARM code as in production; NIC updates take 5 s to propagate (--real-delay:
# 120 s, as on Azure). The demo hands the nodes their managed-identity tokens through the
# App Service variables azure_identity reads (IDENTITY_ENDPOINT/IDENTITY_HEADER): two VMs cannot
# both have 169.254.169.254 in one emulator process here; the end-to-end tests serve it inside
# each node's namespace instead.
#
# --local: the on-premises story instead: the floating IP 10.77.0.100 on lan0 plus gratuitous
# ARP, with a client pinging it through the failover.
#
# Usage: scripts/demo.sh [--local | --real-delay]   (as root; CLOUDHA_BIN overrides the binary)
# Needs: ip (iproute2), ping (iputils-ping), python3 (installed by scripts/install-deps.sh).
set -euo pipefail

MODE=azure
NIC_DELAY_MS=5000
for arg in "$@"; do
  case $arg in
    --local) MODE=local ;;
    --real-delay) NIC_DELAY_MS=120000 ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $arg (use --local or --real-delay)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
# Only what the demo uses; scripts/test.sh installs the rest.
scripts/install-deps.sh --demo
# Followed with `shellcheck -x`; SC1091 only says plain shellcheck does not follow it.
# shellcheck source=netns.sh source-path=SCRIPTDIR disable=SC1091
source scripts/netns.sh

VIP=10.77.0.100
TIMEOUT=20 # seconds, for every wait
BIN=${CLOUDHA_BIN:-target/debug/cloudha}
EMULATOR=${CLOUDHA_EMULATOR_BIN:-target/debug/azure-emulator}
declare -A PID=()
WORK=""

START_US=${EPOCHREALTIME/[.,]/}
elapsed_us() { local now=${EPOCHREALTIME/[.,]/}; echo $((now - START_US)); }
fmt_s() { printf '%d.%03d' $(($1 / 1000000)) $(($1 / 1000 % 1000)); }
say() { printf '[%8ss] %s\n' "$(fmt_s "$(elapsed_us)")" "$*"; }
die() { say "FAILED: $*" >&2; exit 1; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  topo_down demo
  if [[ $rc -eq 0 ]]; then
    rm -rf "$WORK"
  elif [[ -n $WORK ]]; then
    echo "logs kept in $WORK" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted" >&2; exit 130' INT TERM

# wait_for DESCRIPTION COMMAND...: retries COMMAND every 50 ms for $TIMEOUT s.
wait_for() {
  local what=$1 deadline=$(($(elapsed_us) + TIMEOUT * 1000000))
  shift
  until "$@"; do
    (($(elapsed_us) < deadline)) || die "no $what within ${TIMEOUT}s"
    check_daemons
    sleep 0.05
  done
}

# Fails fast, with the log tail, when a daemon we did not kill has exited.
check_daemons() {
  local n
  for n in a b; do
    if [[ -n ${PID[$n]:-} ]] && ! kill -0 "${PID[$n]}" 2>/dev/null; then
      tail -n 20 "$WORK/$n.log" >&2
      die "fw-$n exited unexpectedly (log above, $WORK/$n.log)"
    fi
  done
}

# status NODE: sets ROLE, EPOCH, PEER_ALIVE, DETECT_MS, REASON from `cloudha status --json`.
status() {
  local json
  ROLE="" EPOCH="" PEER_ALIVE="" DETECT_MS="" REASON=""
  json=$("$BIN" status --json --socket "$WORK/$1.sock" 2>/dev/null) || return 1
  read -r ROLE EPOCH PEER_ALIVE DETECT_MS REASON < <("$NETNS_PYTHON" -c '
import json, sys
s = json.loads(sys.argv[1])
lt = s.get("last_transition") or {}
lf = s.get("last_failover") or {}
print(s["role"], s["epoch"], str(s["peer"]["alive"]).lower(), lf.get("detection_ms") or "-", lt.get("reason", "-"))' "$json")
}
is_role() { status "$1" && [[ $ROLE == "$2" ]]; }
client_uses() { [[ $(neigh_mac c "$VIP") == "$1" ]]; }
holds_vip() { in_ns "$1" ip -o addr show dev lan0 | grep -q " $VIP/"; }
# Names the nodes whose lan0 carries the floating IP (should be exactly the active one).
say_holders() {
  local n held=""
  for n in a b; do if holds_vip "$n"; then held+=" fw-$n"; fi; done
  say "  $VIP is configured on:${held:- nobody}"
}
vip_answers() { in_ns c ping -n -q -c 1 -W 1 "$VIP" >/dev/null; }

# write_config NODE NAME PRIORITY PEER_NAME LAN_IP PEER_LAN MGMT_IP PEER_MGMT PROVIDER_SECTIONS
write_config() {
  cat >"$WORK/$1.toml" <<EOF
[cluster]
id = 7
key_file = "$WORK/key"

[node]
name = "$2"
priority = $3
preempt = true
preempt_hold_down = "3s"
state_dir = "$WORK/$1-state"

[peer]
name = "$4"

[keepalive]
interval = "100ms"
dead_interval = "500ms"

[[keepalive.path]]
name = "lan"
bind = "$5:5405"
peer = "$6:5405"

[[keepalive.path]]
name = "mgmt"
bind = "$7:5405"
peer = "$8:5405"

[status]
socket = "$WORK/$1.sock"
$9
EOF
  mkdir -p "$WORK/$1-state"
}

# start NODE [VAR=VALUE...]: runs the daemon in NODE's namespace. `ip netns exec` execs `env`,
# which execs the daemon, so $! is the daemon's own pid and kill -9 hits it, not a wrapper.
start() {
  local node=$1
  shift
  ip netns exec "$(ns_name "$node")" env "$@" "$BIN" run --config "$WORK/$node.toml" >>"$WORK/$node.log" 2>&1 &
  PID[$node]=$!
  say "started fw-$node (pid ${PID[$node]})"
}

[[ $EUID -eq 0 ]] || die "run as root (creates network namespaces)"
for tool in ip ping python3; do
  command -v "$tool" >/dev/null || die "missing $tool: apt-get install -y iproute2 iputils-ping python3"
done
if [[ ! -x $BIN || ! -x $EMULATOR ]]; then
  [[ -z ${CLOUDHA_BIN:-} || -x $BIN ]] || die "CLOUDHA_BIN=$BIN is not executable"
  say "building cloudha and the Azure emulator (cargo build)"
  cargo build --quiet --workspace --bins
fi
BIN=$(realpath "$BIN")
EMULATOR=$(realpath "$EMULATOR")

WORK=$(mktemp -d /tmp/cloudha-demo.XXXXXX)
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/key")

story_local() {
  local provider
  provider=$(printf '\n[provider]\nkind = "local"\n\n[provider.local]\ninterface = "lan0"\n\n[[floating_ip]]\naddress = "%s"\nprefix_len = 24\n' "$VIP")
  write_config a fw-a 200 fw-b 10.77.0.1 10.77.0.2 10.77.1.1 10.77.1.2 "$provider"
  write_config b fw-b 100 fw-a 10.77.0.2 10.77.0.1 10.77.1.2 10.77.1.1 "$provider"
  topo_up demo || die "could not build the namespace topology"
  MAC_A=$(lan_mac a) MAC_B=$(lan_mac b)
  say "topology up: fw-a lan0 $MAC_A, fw-b lan0 $MAC_B, client 10.77.0.10; work dir $WORK"

  start a
  start b
  wait_for "fw-a active" is_role a active
  say "fw-a is active (epoch $EPOCH, reason: $REASON)"
  wait_for "fw-b standby" is_role b standby
  say "fw-b is standby (peer alive: $PEER_ALIVE)"
  wait_for "floating IP answering" vip_answers
  wait_for "client ARP entry for $VIP -> fw-a" client_uses "$MAC_A"
  say "client reaches $VIP at fw-a's MAC"

  # -O reports every unanswered request; -w bounds the pinger even if cleanup fails.
  ip netns exec "$(ns_name c)" ping -n -O -i 0.1 -w 120 "$VIP" >"$WORK/ping.log" 2>&1 &
  PID[pinger]=$!
  say "client pinger started (every 100 ms)"
  wait_for "first pinger reply" grep -q 'bytes from' "$WORK/ping.log"

  say "fw-a dies: kill -9 its daemon (pid ${PID[a]}) and cut its LAN port (the VM is gone)"
  KILL_US=$(elapsed_us)
  kill -9 "${PID[a]}"
  in_ns sw ip link set a-lan down
  wait "${PID[a]}" 2>/dev/null || true
  unset 'PID[a]'
  wait_for "fw-b active" is_role b active
  say "fw-b is active (epoch $EPOCH, reason: $REASON), $(fmt_s $(($(elapsed_us) - KILL_US)))s after the kill"
  say "  detection: last keepalive from fw-a -> decision took ${DETECT_MS} ms (dead interval 500 ms)"
  wait_for "client ARP entry for $VIP -> fw-b" client_uses "$MAC_B"
  say "client's ARP entry for $VIP now points at fw-b ($MAC_B)"
  wait_for "floating IP answering from fw-b" vip_answers
  say "$VIP answers again (from fw-b)"

  say "fw-a boots again: LAN port up, daemon started"
  in_ns sw ip link set a-lan up
  start a
  RESTART_US=$(elapsed_us)
  wait_for "fw-a standby after restart" is_role a standby
  say "fw-a is standby (peer alive: $PEER_ALIVE), waiting out the 3s preemption hold-down"
  say_holders
  wait_for "fw-a to take the role back" is_role a active
  say "fw-a is active again (epoch $EPOCH, reason: $REASON), $(fmt_s $(($(elapsed_us) - RESTART_US)))s after restart"
  wait_for "fw-b standby" is_role b standby
  say "fw-b is standby"
  wait_for "client ARP entry for $VIP -> fw-a" client_uses "$MAC_A"
  say "client's ARP entry for $VIP points at fw-a ($MAC_A) again"
  wait_for "floating IP answering from fw-a" vip_answers
  say_holders

  kill -INT "${PID[pinger]}"
  wait "${PID[pinger]}" 2>/dev/null || true
  unset 'PID[pinger]'
  # Longest run of missing icmp_seq between replies = longest outage seen by the client.
  read -r SENT GOT GAP < <(awk '
    /bytes from/ { match($0, /icmp_seq=[0-9]+/); s = substr($0, RSTART + 9, RLENGTH - 9) + 0
                   if (n && s - last - 1 > gap) gap = s - last - 1; last = s; n++ }
    /packets transmitted/ { sent = $1 }
    END { print sent + 0, n + 0, gap + 0 }' "$WORK/ping.log")
  say "client pinger: $SENT sent, $GOT replies, $((SENT - GOT)) lost; longest outage $GAP replies (~$(fmt_s $((GAP * 100000)))s)"
  say "fw-b's takeover as a timeline (cloudha events --failover, from its journal):"
  "$BIN" events --failover --journal "$WORK/b-state/journal.jsonl" | sed 's/^/  /'
  say "demo complete"
}

if [[ $MODE == local ]]; then
  story_local
else
  # shellcheck source=demo-azure.sh source-path=SCRIPTDIR disable=SC1091
  source scripts/demo-azure.sh
  story_azure
fi
