#!/usr/bin/env bash
# The README's AWS walk-through, runnable: a moto EC2 server on loopback, a fresh VPC built with
# the AWS CLI (subnet, two ENIs, a floating secondary IP with an Elastic IP, a route table), two
# cloudha daemons on 127.0.0.1 / 127.0.0.2 with the AWS provider, the active killed, and the
# addresses, the Elastic IP and the route read back through the API, with the failover's API
# calls. Exits non-zero if anything is not where it should be.
# Usage: scripts/aws-walkthrough.sh [--keep]   (--keep leaves moto and fw-b running)
# Needs: scripts/install-deps.sh (moto and the AWS CLI in /opt/cloudha-venv), a built cloudha
# (CLOUDHA_BIN, default target/debug/cloudha, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=false
[[ ${1:-} == --keep ]] && KEEP=true
VENV=/opt/cloudha-venv
BIN=${CLOUDHA_BIN:-target/debug/cloudha}
[[ -x $BIN ]] || cargo build --quiet --bin cloudha
BIN=$(realpath "$BIN")
WORK=$(mktemp -d /tmp/cloudha-aws.XXXXXX)
PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
cleanup() {
  if [[ $KEEP == false ]]; then
    ((${#pids[@]} == 0)) || kill "${pids[@]}" 2>/dev/null || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
die() {
  echo "aws-walkthrough: $*" >&2
  for log in "$WORK"/*.log; do echo "--- $log" >&2 && tail -20 "$log" >&2; done
  exit 1
}
# wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.1 s (bounded).
wait_for() {
  local limit=$(($1 * 10)) what=$2
  shift 2
  for ((i = 0; i < limit; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "timed out after ${limit}00 ms waiting for $what"
}

# 1. moto, with the AWS CLI pointed at it (moto accepts any credentials).
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
pids+=($!)
export PATH=$VENV/bin:$PATH
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=eu-west-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
wait_for 60 "moto on port $PORT" aws ec2 describe-vpcs

# 2. A fresh VPC: fw-a's ENI holds the floating IP 10.0.1.100, its Elastic IP and the route.
VPC=$(aws ec2 create-vpc --cidr-block 10.0.0.0/16 --query Vpc.VpcId --output text)
SUBNET=$(aws ec2 create-subnet --vpc-id "$VPC" --cidr-block 10.0.1.0/24 --query Subnet.SubnetId --output text)
ENI_A=$(aws ec2 create-network-interface --subnet-id "$SUBNET" --private-ip-address 10.0.1.10 \
  --query NetworkInterface.NetworkInterfaceId --output text)
ENI_B=$(aws ec2 create-network-interface --subnet-id "$SUBNET" --private-ip-address 10.0.1.11 \
  --query NetworkInterface.NetworkInterfaceId --output text)
for eni in "$ENI_A" "$ENI_B"; do
  aws ec2 modify-network-interface-attribute --network-interface-id "$eni" --no-source-dest-check
done
aws ec2 assign-private-ip-addresses --network-interface-id "$ENI_A" --private-ip-addresses 10.0.1.100 >/dev/null
EIP=$(aws ec2 allocate-address --domain vpc --query AllocationId --output text)
aws ec2 associate-address --allocation-id "$EIP" --network-interface-id "$ENI_A" \
  --private-ip-address 10.0.1.100 >/dev/null
RTB=$(aws ec2 create-route-table --vpc-id "$VPC" --query RouteTable.RouteTableId --output text)
aws ec2 create-route --route-table-id "$RTB" --destination-cidr-block 0.0.0.0/0 \
  --network-interface-id "$ENI_A" >/dev/null
echo "VPC $VPC: fw-a $ENI_A, fw-b $ENI_B, Elastic IP $EIP, route table $RTB"

# 3. One key and one config per node (keepalives on loopback; region and ENIs named because
# there is no instance metadata service here).
head -c 32 /dev/urandom >"$WORK/key"
chmod 600 "$WORK/key"
node_config() { # NAME PEER PRIORITY OWN_ADDR PEER_ADDR OWN_ENI PEER_ENI
  cat <<EOF
[cluster]
id = 7
key_file = "$WORK/key"

[node]
name = "$1"
priority = $3
state_dir = "$WORK/$1"

[peer]
name = "$2"

[keepalive]
interval = "100ms"
dead_interval = "500ms"

[[keepalive.path]]
name = "lo"
bind = "$4:5405"
peer = "$5:5405"

[status]
socket = "$WORK/$1.sock"

[metrics]
listen = "$4:9465"

[provider]
kind = "aws"

[provider.aws]
region = "eu-west-1"
endpoint = "$AWS_ENDPOINT_URL"
own_eni = "$6"
peer_eni = "$7"

[[floating_ip]]
address = "10.0.1.100"
prefix_len = 24
elastic_ip = "$EIP"

[[route]]
table = "$RTB"
name = "default"
prefix = "0.0.0.0/0"
EOF
}
mkdir -p "$WORK/fw-a" "$WORK/fw-b"
node_config fw-a fw-b 200 127.0.0.1 127.0.0.2 "$ENI_A" "$ENI_B" >"$WORK/fw-a.toml"
node_config fw-b fw-a 100 127.0.0.2 127.0.0.1 "$ENI_B" "$ENI_A" >"$WORK/fw-b.toml"
"$BIN" config check "$WORK/fw-a.toml"
"$BIN" config check "$WORK/fw-b.toml"

# 4. Both daemons (credentials from the environment; no instance metadata service to ask).
role_is() { "$BIN" status --json --config "$WORK/$1.toml" | grep -q "\"role\": *\"$2\""; }
ready() { "$BIN" status --config "$WORK/$1.toml" | grep -q '^HA: Ready'; }
AWS_EC2_METADATA_DISABLED=true "$BIN" run --config "$WORK/fw-a.toml" 2>"$WORK/fw-a.log" &
pids+=($!)
fw_a=$!
wait_for 30 "fw-a to be active" role_is fw-a active
AWS_EC2_METADATA_DISABLED=true "$BIN" run --config "$WORK/fw-b.toml" 2>"$WORK/fw-b.log" &
pids+=($!)
wait_for 30 "the pair to be HA Ready" ready fw-b

# 5. Kill the active; fw-b takes over.
kill -9 "$fw_a"
killed=$(date +%s%N)
done_on_b() { "$BIN" status --json --config "$WORK/fw-b.toml" | grep -q '"state": *"done"' && role_is fw-b active; }
wait_for 60 "fw-b's takeover to converge" done_on_b
echo "fw-b active and converged $((($(date +%s%N) - killed) / 1000000)) ms after the kill"
"$BIN" status --config "$WORK/fw-b.toml"

# 6. Read back through the API.
echo "--- read back through the EC2 API"
on_b=$(aws ec2 describe-network-interfaces --network-interface-ids "$ENI_B" \
  --query 'NetworkInterfaces[0].PrivateIpAddresses[].PrivateIpAddress' --output text)
on_a=$(aws ec2 describe-network-interfaces --network-interface-ids "$ENI_A" \
  --query 'NetworkInterfaces[0].PrivateIpAddresses[].PrivateIpAddress' --output text)
eip_on=$(aws ec2 describe-addresses --allocation-ids "$EIP" --query 'Addresses[0].NetworkInterfaceId' --output text)
route_to=$(aws ec2 describe-route-tables --route-table-ids "$RTB" \
  --query "RouteTables[0].Routes[?DestinationCidrBlock=='0.0.0.0/0'].NetworkInterfaceId" --output text)
# --output text separates the addresses with tabs.
on_a=${on_a//$'\t'/ } on_b=${on_b//$'\t'/ }
echo "fw-b ENI addresses: $on_b"
echo "fw-a ENI addresses: $on_a"
echo "Elastic IP on:      $eip_on"
echo "0.0.0.0/0 via:      $route_to"
echo "API calls of the failover:"
"$BIN" status --json --config "$WORK/fw-b.toml" | "$VENV/bin/python" -c "$(cat <<'PY'
import json, sys
record = json.load(sys.stdin)["last_failover"]
calls = record["api_calls"]
for operation, count in sorted(calls.items()):
    print(f"  {operation:28} {count}")
print(f"  {'total':28} {sum(calls.values())}")
PY
)"
[[ " $on_b " == *" 10.0.1.100 "* ]] || die "10.0.1.100 is not on fw-b's ENI"
[[ " $on_a " != *" 10.0.1.100 "* ]] || die "10.0.1.100 is still on fw-a's ENI"
[[ $eip_on == "$ENI_B" ]] || die "the Elastic IP is on $eip_on, not fw-b's ENI"
[[ $route_to == "$ENI_B" ]] || die "the route points at $route_to, not fw-b's ENI"
echo "PASS: the floating IP, its Elastic IP and the route follow fw-b"
if [[ $KEEP == true ]]; then
  echo "kept: moto at $AWS_ENDPOINT_URL, fw-b running, files in $WORK"
fi
