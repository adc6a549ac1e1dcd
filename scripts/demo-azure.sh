#!/usr/bin/env bash
# The Azure story of scripts/demo.sh (sourced by it; uses its helpers: say, die, wait_for,
# start, write_config, status, is_role, ns_name, in_ns, topo_up, $WORK, $BIN, $EMULATOR).

ARM_IP=10.77.0.254
ARM=http://$ARM_IP:8080
SCENARIO=providers/azure-emulator/scenarios/two-appliances.toml
SUB=$(sed -n 's/^subscription_id = "\(.*\)"/\1/p' "$SCENARIO")
RG=$(sed -n 's/^resource_group = "\(.*\)"/\1/p' "$SCENARIO")
NET=/subscriptions/$SUB/resourceGroups/$RG/providers/Microsoft.Network
# A takeover includes two NIC propagations; leave room for retries.
TAKEOVER_TIMEOUT=$((NIC_DELAY_MS * 4 / 1000 + 30))

# facts NODE WHAT: see scripts/demo_status.py.
facts() {
  local json
  json=$("$BIN" status --json --socket "$WORK/$1.sock" 2>/dev/null) || return 1
  "$NETNS_PYTHON" scripts/demo_status.py "$2" "$json"
}
converged() {
  local takeover
  takeover=$(facts "$1" takeover) || return 1
  [[ ${takeover%%$'\n'*} == "done" && $(facts "$1" mine) == yes ]]
}
ha_ready() { [[ $(facts "$1" ready) == ready ]]; }

# follow_takeover NODE: prints each cloud operation as it starts and as it ends, until done.
follow_takeover() {
  local node=$1 deadline=$(($(elapsed_us) + TAKEOVER_TIMEOUT * 1000000)) state kind id ms rest
  declare -A seen=()
  while :; do
    check_daemons
    (($(elapsed_us) < deadline)) || die "fw-$node's takeover did not converge within ${TAKEOVER_TIMEOUT}s"
    state=""
    while IFS=$'\t' read -r kind id ms rest; do
      case $kind in
        P) [[ -n ${seen[P$id]:-} ]] || { seen[P$id]=1; say "  ... $id: $rest"; } ;;
        F) [[ -n ${seen[F$id]:-} ]] || { seen[F$id]=1; say "  done $id: $rest in ${ms} ms"; } ;;
        *) state=$kind ;;
      esac
    done < <(facts "$node" takeover || true)
    [[ $state == "done" ]] && return 0
    sleep 0.1
  done
}

azure_sections() { # OWN_LETTER PEER_LETTER
  cat <<EOF

[failover]
deadline = "$((TAKEOVER_TIMEOUT))s"
reconcile_interval = "5s"

[provider]
kind = "azure"

[provider.azure]
peer_nic = "$NET/networkInterfaces/nic-appliance-$2"
arm_endpoint = "$ARM"
imds_endpoint = "$ARM/vms/vm-appliance-$1"

[[floating_ip]]
address = "10.10.1.100"
public_ip = "$NET/publicIPAddresses/pip-floating"

[[route]]
table = "$NET/routeTables/rt-workloads"
name = "default-via-appliance"
prefix = "0.0.0.0/0"
next_hop = "self_address"
EOF
}

start_azure() { # NODE
  start "$1" IDENTITY_ENDPOINT="$ARM/msi/token" IDENTITY_HEADER="identity-secret-$1"
}

story_azure() {
  local t0
  write_config a fw-a 200 fw-b 10.77.0.1 10.77.0.2 10.77.1.1 10.77.1.2 "$(azure_sections a b)"
  write_config b fw-b 100 fw-a 10.77.0.2 10.77.0.1 10.77.1.2 10.77.1.1 "$(azure_sections b a)"
  topo_up demo || die "could not build the namespace topology"
  in_ns sw ip addr add "$ARM_IP/24" dev br0
  sed "s/^nic_propagation_ms = .*/nic_propagation_ms = $NIC_DELAY_MS/" "$SCENARIO" >"$WORK/scenario.toml"
  ip netns exec "$(ns_name sw)" "$EMULATOR" --scenario "$WORK/scenario.toml" --listen "$ARM_IP:8080" \
    >"$WORK/emulator.log" 2>&1 &
  # PID is demo.sh's associative array of processes to kill on exit.
  # shellcheck disable=SC2154
  PID[emulator]=$!
  wait_for "the emulated cloud" grep -qs "listening on" "$WORK/emulator.log"
  say "emulated Azure (ARM + IMDS) at $ARM: NIC updates take $((NIC_DELAY_MS / 1000)) s to propagate, routes 1 s"
  say "  10.10.1.100 (+ public IP pip-floating) is on nic-appliance-a; rt-workloads 0.0.0.0/0 -> 10.10.1.4 (fw-a)"

  start_azure a
  start_azure b
  wait_for "fw-a active" is_role a active
  say "fw-a is active (epoch $EPOCH): $REASON"
  wait_for "fw-b standby" is_role b standby
  say "fw-b is standby"
  wait_for "fw-a to verify the cloud state" converged a
  say "fw-a read the cloud back: $(facts a cloud)"
  wait_for "HA Ready on fw-a" ha_ready a
  say "HA Ready on fw-a (keepalives on both paths, same version and config, identity and ARM working)"

  say "fw-a dies: kill -9 its daemon (pid ${PID[a]}) and cut its LAN port (the VM is gone)"
  t0=$(elapsed_us)
  kill -9 "${PID[a]}"
  wait "${PID[a]}" 2>/dev/null || true
  unset 'PID[a]'
  in_ns sw ip link set a-lan down
  wait_for "fw-b active" is_role b active
  say "fw-b is active (epoch $EPOCH), $(fmt_s $(($(elapsed_us) - t0)))s after the kill: $REASON"
  follow_takeover b
  say "fw-b converged $(fmt_s $(($(elapsed_us) - t0)))s after the kill: $(facts b failover)"
  wait_for "fw-b to read the cloud back" converged b
  say "  cloud now: $(facts b cloud)"

  say "fw-a boots again: LAN port up, daemon started"
  in_ns sw ip link set a-lan up
  start_azure a
  wait_for "fw-a standby after restart" is_role a standby
  say "fw-a is standby, fw-b keeps the role during the 3 s preemption hold-down"
  t0=$(elapsed_us)
  wait_for "fw-a to take the role back" is_role a active
  say "fw-a preempts (epoch $EPOCH): $REASON"
  follow_takeover a
  wait_for "fw-b standby" is_role b standby
  say "fw-a converged $(fmt_s $(($(elapsed_us) - t0)))s after it came back (3 s hold-down included): $(facts a failover)"
  wait_for "fw-a to read the cloud back" converged a
  say "  cloud now: $(facts a cloud)"
  say "fw-b's journal, the failover part (cloudha events; JSON lines in $WORK/b-state/journal.jsonl):"
  "$BIN" events --journal "$WORK/b-state/journal.jsonl" |
    grep -E 'transition|takeover_|resume' | tail -n 6 | sed 's/^/    /'
  say "fw-a's metrics (127.0.0.1:9465/metrics in its namespace), failover lines:"
  in_ns a "$NETNS_PYTHON" -c 'import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:9465/metrics", timeout=5).read().decode())' |
    grep -E '^cloudha_(failovers_total|failover_phase_seconds_sum|role\{role="active"\})' | sed 's/^/    /'
  say "fw-b's takeover as a timeline (cloudha events --failover, from its journal):"
  "$BIN" events --failover --journal "$WORK/b-state/journal.jsonl" | sed 's/^/  /'
  say "demo complete"
}
