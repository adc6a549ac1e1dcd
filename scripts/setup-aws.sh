#!/usr/bin/env bash
# Sets up an AWS pair for cloudha with the AWS CLI (aws), idempotently: see --help.
set -euo pipefail

PROG=setup-aws
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEPLOY=$HERE/../deploy/aws
# shellcheck source=setup-lib.sh source-path=SCRIPTDIR
source "$HERE/setup-lib.sh"

usage() {
  cat <<'EOF'
Usage: scripts/setup-aws.sh --instance-a ID --instance-b ID --eni-a ENI --eni-b ENI
         --floating-ip ADDR[,EIPALLOC] [options]

Sets up a cloudha pair on AWS with the aws CLI (credentials allowed to manage IAM roles and
EC2 ENIs). Each step first reads the current state and changes only what differs: a second run
changes nothing. Steps:
  1. the IAM role (--role-name) EC2 instances can assume (deploy/aws/cloudha-trust.json);
  2. its inline policy "cloudha-failover" (deploy/aws/cloudha-policy.json: exactly the EC2 actions
     the failover needs) and "cloudha-selftest" (iam:SimulatePrincipalPolicy on the role itself,
     so that `cloudha selftest` can prove the actions that have no DryRun);
  3. an instance profile (same name) holding the role, associated with both instances;
  4. source/destination check off on both ENIs (an appliance forwards others' traffic);
  5. each floating IP as a secondary private IP of ENI A (unless an ENI of the pair holds it),
     and its Elastic IP, if given, associated with it;
  6. each node's cloudha config and the shared keepalive key, into --out DIR (or printed).

Required:
  --instance-a ID, --instance-b ID   the two instances (A is the primary: priority 200)
  --eni-a ENI, --eni-b ENI           their ENIs in the LAN subnet (eni-...)
  --floating-ip ADDR[,EIPALLOC]      a floating private IP, optionally with the Elastic IP
                                     (eipalloc-...) that follows it; repeatable

Options:
  --route RTB,NAME,PREFIX   a [[route]] for the configs (route table rtb-..., a label, a CIDR)
                            whose target follows the active node's ENI; repeatable
  --region REGION           passed to every aws command and written into the configs
  --role-name NAME          role and instance profile name (default: cloudha-pair)
  --name-a NAME, --name-b NAME  node names (default: fw-a, fw-b)
  --cluster-id N            default: 1 (give each pair on a network its own)
  --port PORT               keepalive UDP port (default: 5405)
  --key-path PATH           key_file written into the configs, absolute (default: /etc/cloudha/key)
  --out DIR                 write DIR/<name-a>.toml, DIR/<name-b>.toml and DIR/key (mode 0600);
                            without it the configs are printed. DIR is created 0700; an existing one
                            must be yours and not writable by others, and symlinks in it are refused
  --dry-run                 print every command and run none (queries answer "nothing exists")
  -h, --help                this help

Example:
  scripts/setup-aws.sh --region eu-west-1 --instance-a i-0aaa --instance-b i-0bbb \
    --eni-a eni-0aaa --eni-b eni-0bbb --floating-ip 10.0.1.100 \
    --route rtb-0123,default,0.0.0.0/0 --out ./cloudha-out
EOF
}

INSTANCE_A="" INSTANCE_B="" ENI_A="" ENI_B="" REGION="" ROLE_NAME=cloudha-pair
NAME_A=fw-a NAME_B=fw-b CLUSTER_ID=1 PORT=5405 KEY_PATH=/etc/cloudha/key OUT=""
FLOATING=() ROUTES=()

while (($# > 0)); do
  flag=$1
  case $flag in
  -h | --help)
    usage
    exit 0
    ;;
  --dry-run)
    DRY_RUN=true
    shift
    continue
    ;;
  esac
  (($# >= 2)) || die "$flag needs a value (see --help)"
  value=$2
  case $flag in
  --instance-a) INSTANCE_A=$value ;;
  --instance-b) INSTANCE_B=$value ;;
  --eni-a) ENI_A=$value ;;
  --eni-b) ENI_B=$value ;;
  --floating-ip) FLOATING+=("$value") ;;
  --route) ROUTES+=("$value") ;;
  --region) REGION=$value ;;
  --role-name) ROLE_NAME=$value ;;
  --name-a) NAME_A=$value ;;
  --name-b) NAME_B=$value ;;
  --cluster-id) CLUSTER_ID=$value ;;
  --port) PORT=$value ;;
  --key-path) KEY_PATH=$value ;;
  --out) OUT=$value ;;
  *) die "unknown flag $flag (see --help)" ;;
  esac
  shift 2
done

need "$INSTANCE_A" --instance-a
need "$INSTANCE_B" --instance-b
need "$ENI_A" --eni-a
need "$ENI_B" --eni-b
((${#FLOATING[@]} > 0)) || die "missing --floating-ip (at least one; see --help)"
# Every id and name against AWS's formats (see setup-lib.sh): these go into the CLI's argv, its
# shorthand (Name=...), JMESPath filters, the selftest policy (JSON) and the configs.
check_aws_id "$INSTANCE_A" --instance-a i "an instance id"
check_aws_id "$INSTANCE_B" --instance-b i "an instance id"
check_aws_id "$ENI_A" --eni-a eni "an ENI id"
check_aws_id "$ENI_B" --eni-b eni "an ENI id"
[[ $ENI_A != "$ENI_B" ]] || die "--eni-a and --eni-b are both $ENI_A; give each instance's LAN ENI"
check_node_name "$NAME_A" --name-a
check_node_name "$NAME_B" --name-b
[[ $NAME_A != "$NAME_B" ]] || die "--name-a and --name-b are both \"$NAME_A\"; each node needs its own name"
# IAM also allows , and = in role names, but they would split the CLI's Name=ROLE argument.
check_re "$ROLE_NAME" --role-name '^[A-Za-z0-9+.@_-]{1,64}$' \
  "an IAM role name is 1-64 letters, digits and + . @ _ - (here without , and =)"
[[ -z $REGION ]] || check_re "$REGION" --region '^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$' \
  "a region is like eu-west-1 or us-gov-west-1"
check_cluster_id "$CLUSTER_ID"
check_port "$PORT"
check_path "$KEY_PATH" --key-path
[[ -z $OUT ]] || OUT=$(out_dir "$OUT")
[[ -z $OUT ]] || precheck_out "$OUT" "$NAME_A.toml" "$NAME_B.toml" key
for spec in "${FLOATING[@]}"; do
  check_host_ipv4 "${spec%%,*}" --floating-ip
  [[ $spec != *,* ]] || check_aws_id "${spec#*,}" "--floating-ip (Elastic IP)" eipalloc "an Elastic IP allocation id"
done
for spec in "${ROUTES[@]}"; do
  IFS=, read -r rt_table rt_name rt_prefix rt_extra <<<"$spec"
  [[ -n $rt_table && -n $rt_name && -n $rt_prefix && -z $rt_extra && $spec != *$'\n'* ]] ||
    die "--route: $(shown "$spec") is not valid: write RTB,NAME,PREFIX, e.g. rtb-0123456789abcdef0,default,0.0.0.0/0"
  check_aws_id "$rt_table" "--route (table)" rtb "a route table id"
  check_re "$rt_name" "--route (name)" "$AZ_NAME_RE" "a route label is $AZ_NAME_RULE"
  check_cidr "$rt_prefix" "--route (prefix)"
done
if [[ -n $REGION ]]; then
  EXTRA_ARGS=(--region "$REGION")
fi

# IAM changes take a few seconds to reach EC2: a fresh instance profile is "invalid" at first.
PROPAGATION='Invalid IamInstanceProfile|InvalidParameterValue.*[Ii]nstance [Pp]rofile'

# --- 1. role ----------------------------------------------------------------------------------

say "1. IAM role $ROLE_NAME"
ROLE_ARN=""
query_absent "role $ROLE_NAME" ROLE_ARN NoSuchEntity aws iam get-role --role-name "$ROLE_NAME" \
  --query Role.Arn --output text
if [[ -z $ROLE_ARN ]]; then
  change "role $ROLE_NAME" aws iam create-role --role-name "$ROLE_NAME" \
    --assume-role-policy-document "file://$DEPLOY/cloudha-trust.json" \
    --description "cloudha HA pair: moves floating IPs and routes to the active node"
  query "role $ROLE_NAME" ROLE_ARN aws iam get-role --role-name "$ROLE_NAME" --query Role.Arn --output text
  [[ $DRY_RUN == false ]] || ROLE_ARN="arn:aws:iam::<account>:role/$ROLE_NAME"
else
  unchanged "role $ROLE_NAME exists"
fi

# The ARN goes into the selftest policy (JSON): checked like the flags.
if [[ $DRY_RUN == false ]]; then
  check_re "$ROLE_ARN" "the ARN of role $ROLE_NAME (aws iam get-role)" \
    '^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$' "an IAM role ARN is arn:aws:iam::ACCOUNT:role/NAME"
  [[ $ROLE_ARN == */"$ROLE_NAME" ]] || die "aws iam get-role answered $(shown "$ROLE_ARN"), not an ARN of role $ROLE_NAME"
fi

# --- 2. policies ------------------------------------------------------------------------------

# The actions and resources of a policy document, one per line, sorted: compared with what the
# role has, so that a policy is rewritten only when it differs.
policy_words() {
  grep -Eo '"(ec2|iam):[A-Za-z]+"|"Resource": *"[^"]*"' "$1" | sed -E 's/"Resource": *//' | tr -d '"' | sort
}

# ensure_policy NAME FILE
ensure_policy() {
  local name=$1 file=$2 have=""
  query_absent "policy $name" have NoSuchEntity aws iam get-role-policy --role-name "$ROLE_NAME" \
    --policy-name "$name" --query "[PolicyDocument.Statement[].Action[], PolicyDocument.Statement[].Resource][]" --output text
  if [[ -n $have ]] && [[ $(tr -s '\t ' '\n' <<<"$have" | sed '/^$/d' | sort) == "$(policy_words "$file")" ]]; then
    unchanged "policy $name of role $ROLE_NAME"
    return 0
  fi
  [[ -z $have ]] || say "policy $name of role $ROLE_NAME differs from $(basename "$file"): rewriting it"
  change "policy $name" aws iam put-role-policy --role-name "$ROLE_NAME" --policy-name "$name" \
    --policy-document "file://$file"
}
say "2. role policies"
ensure_policy cloudha-failover "$DEPLOY/cloudha-policy.json"
# The self-grant names the role's own ARN, known only now.
SELFTEST_POLICY=$WORK_DIR/cloudha-selftest.json
cat >"$SELFTEST_POLICY" <<EOF
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "CloudhaSelftest",
      "Effect": "Allow",
      "Action": ["iam:SimulatePrincipalPolicy"],
      "Resource": "$ROLE_ARN"
    }
  ]
}
EOF
ensure_policy cloudha-selftest "$SELFTEST_POLICY"

# --- 3. instance profile ----------------------------------------------------------------------

say "3. instance profile $ROLE_NAME on both instances"
PROFILE_ROLES=""
PROFILE_EXISTS=false
query_absent "instance profile $ROLE_NAME" PROFILE_ROLES NoSuchEntity aws iam get-instance-profile \
  --instance-profile-name "$ROLE_NAME" --query "InstanceProfile.[InstanceProfileName, Roles[].RoleName][]" --output text
if [[ -n $PROFILE_ROLES ]]; then
  PROFILE_EXISTS=true
fi
if [[ $PROFILE_EXISTS == false ]]; then
  change "instance profile $ROLE_NAME" aws iam create-instance-profile --instance-profile-name "$ROLE_NAME"
else
  unchanged "instance profile $ROLE_NAME exists"
fi
# Output: the profile's name, then its roles' names.
if tr -s '\t' '\n' <<<"$PROFILE_ROLES" | tail -n +2 | grep -Fxq -- "$ROLE_NAME"; then
  unchanged "role $ROLE_NAME in instance profile $ROLE_NAME"
else
  change "role in instance profile" aws iam add-role-to-instance-profile \
    --instance-profile-name "$ROLE_NAME" --role-name "$ROLE_NAME"
fi

for instance in "$INSTANCE_A" "$INSTANCE_B"; do
  associated=""
  query "instance profile of $instance" associated aws ec2 describe-iam-instance-profile-associations \
    --filters "Name=instance-id,Values=$instance" \
    --query "IamInstanceProfileAssociations[?State=='associated'].IamInstanceProfile.Arn" --output text
  if [[ -z $associated || $associated == None ]]; then
    change_retrying "instance profile on $instance" "$PROPAGATION" aws ec2 associate-iam-instance-profile \
      --instance-id "$instance" --iam-instance-profile "Name=$ROLE_NAME"
  elif [[ $associated == */"$ROLE_NAME" ]]; then
    unchanged "instance profile $ROLE_NAME on $instance"
  else
    die "instance $instance already has the instance profile $associated (one per instance): add the \
cloudha policies (deploy/aws/cloudha-policy.json and the selftest grant) to its role instead, or replace it: \
aws ec2 replace-iam-instance-profile-association --association-id <id> --iam-instance-profile Name=$ROLE_NAME"
  fi
done

# --- 4. ENIs: owner, source/dest check, primary address ---------------------------------------

say "4. source/dest check off on both ENIs"
declare -A LAN_IP=()
for pair in "$ENI_A:$INSTANCE_A" "$ENI_B:$INSTANCE_B"; do
  eni=${pair%%:*} instance=${pair#*:} row=""
  query "ENI $eni" row aws ec2 describe-network-interfaces --network-interface-ids "$eni" \
    --query "NetworkInterfaces[0].[Attachment.InstanceId, SourceDestCheck, PrivateIpAddress]" --output text
  if [[ $DRY_RUN == true ]]; then
    row=$(printf '%s\t%s\t%s' "$instance" True "<primary private IP of $eni>")
  fi
  IFS=$'\t' read -r owner check address <<<"$row"
  [[ $owner == "$instance" ]] ||
    die "ENI $eni is attached to \"$owner\", not to $instance: check --eni-a/--eni-b and --instance-a/--instance-b"
  [[ $DRY_RUN == true ]] || check_host_ipv4 "$address" "the primary private IP of ENI $eni"
  LAN_IP[$eni]=$address
  if [[ $check == False ]]; then
    unchanged "source/dest check off on $eni"
  else
    change "source/dest check on $eni" aws ec2 modify-network-interface-attribute \
      --network-interface-id "$eni" --no-source-dest-check
  fi
done

# --- 5. floating IPs --------------------------------------------------------------------------

say "5. floating IPs on ENI $ENI_A"
private_ips() {
  local eni=$1 var=$2 found=""
  query "addresses of ENI $eni" found aws ec2 describe-network-interfaces --network-interface-ids "$eni" \
    --query "NetworkInterfaces[0].PrivateIpAddresses[].PrivateIpAddress" --output text
  printf -v "$var" '%s' "$(tr -s '\t ' '\n' <<<"$found")"
}
FLOATING_TOML=""
for spec in "${FLOATING[@]}"; do
  address=${spec%%,*} eip="" on_a="" on_b="" holder=$ENI_A
  [[ $spec != *,* ]] || eip=${spec#*,}
  private_ips "$ENI_A" on_a
  private_ips "$ENI_B" on_b
  if grep -Fxq -- "$address" <<<"$on_a"; then
    unchanged "floating IP $address on $ENI_A"
  elif grep -Fxq -- "$address" <<<"$on_b"; then
    holder=$ENI_B
    unchanged "floating IP $address on $ENI_B (that node is active)"
  else
    change "floating IP $address on $ENI_A" aws ec2 assign-private-ip-addresses \
      --network-interface-id "$ENI_A" --private-ip-addresses "$address"
  fi
  if [[ -n $eip ]]; then
    eip_row=""
    query "Elastic IP $eip" eip_row aws ec2 describe-addresses --allocation-ids "$eip" \
      --query "Addresses[0].[NetworkInterfaceId, PrivateIpAddress]" --output text
    if [[ $eip_row == "$holder"$'\t'"$address" ]]; then
      unchanged "Elastic IP $eip on $address"
    else
      change "Elastic IP $eip on $address" aws ec2 associate-address --allocation-id "$eip" \
        --network-interface-id "$holder" --private-ip-address "$address" --allow-reassociation
    fi
  fi
  FLOATING_TOML+=$'\n'"[[floating_ip]]"$'\n'"$(toml_kv address "$address")"
  [[ -z $eip ]] || FLOATING_TOML+=$'\n'"$(toml_kv elastic_ip "$eip")"
  FLOATING_TOML+=$'\n'
done

# --- 6. configs and key -----------------------------------------------------------------------

say "6. configs and keepalive key"
ROUTES_TOML=""
for spec in "${ROUTES[@]}"; do
  IFS=, read -r rt_table rt_name rt_prefix <<<"$spec"
  ROUTES_TOML+=$'\n'"[[route]]"$'\n'"$(toml_kv table "$rt_table")"$'\n'"$(toml_kv name "$rt_name")"
  ROUTES_TOML+=$'\n'"$(toml_kv prefix "$rt_prefix")"$'\n'
done

# node_config NAME PRIORITY PEER OWN_IP PEER_IP OWN_ENI PEER_ENI
node_config() {
  config_head setup-aws.sh aws "$1" "$2" "$3" "$4" "$5" 60s
  printf '\n[provider]\n'
  toml_kv kind aws
  printf '\n[provider.aws]\n'
  toml_kv own_eni "$6"
  toml_kv peer_eni "$7"
  [[ -z $REGION ]] || toml_kv region "$REGION"
  printf '%s\n' "$FLOATING_TOML$ROUTES_TOML"
}
CONFIG_A=$(node_config "$NAME_A" 200 "$NAME_B" "${LAN_IP[$ENI_A]}" "${LAN_IP[$ENI_B]}" "$ENI_A" "$ENI_B")
CONFIG_B=$(node_config "$NAME_B" 100 "$NAME_A" "${LAN_IP[$ENI_B]}" "${LAN_IP[$ENI_A]}" "$ENI_B" "$ENI_A")
emit_configs "$OUT" "$KEY_PATH" "$NAME_A" "$CONFIG_A" "$NAME_B" "$CONFIG_B"

summary
