#!/usr/bin/env bash
# Sets up an Azure pair for cloudha with the Azure CLI (az), idempotently: see --help.
set -euo pipefail

PROG=setup-azure
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEPLOY=$HERE/../deploy/azure
# shellcheck source=setup-lib.sh source-path=SCRIPTDIR
source "$HERE/setup-lib.sh"

usage() {
  cat <<'EOF'
Usage: scripts/setup-azure.sh --resource-group RG --vm-a VM --vm-b VM --nic-a NIC --nic-b NIC
         --vnet VNET --subnet SUBNET --floating-ip ADDR[,PUBLIC_IP] [options]

Sets up a cloudha pair on Azure with the az CLI (logged in, with rights to create identities,
roles and role assignments). Each step first reads the current state and changes only what
differs: a second run changes nothing. Steps:
  1. a user-assigned managed identity (--identity-name) in --resource-group;
  2. the custom role "cloudha failover" (deploy/azure/cloudha-role.json: exactly the actions the
     failover needs) and "cloudha failover operations" (deploy/azure/cloudha-operations-role.json:
     only Microsoft.Network/locations/operations/read), AssignableScopes = the subscription;
  3. role assignments at the narrowest scopes: "cloudha failover" on both LAN NICs, the subnet,
     both VMs (each node reads its own VM to find its NIC), each route table, each public IP and
     NSG, each --linked resource, and the VNet with --move-mode atomic (the moveIpConfigurations
     POST is authorized there); "cloudha failover operations" on the subscription (operation
     status lives there only);
  4. the identity attached to both VMs;
  5. IP forwarding on both LAN NICs;
  6. each floating IP as a secondary ipConfiguration (cloudha-A-B-C-D) on NIC A, unless a NIC of
     the pair already holds it;
  7. each node's cloudha config (with move_mode = "atomic" when chosen) and the shared
     keepalive key, into --out DIR (or printed).

Required:
  --resource-group RG         the VMs' and NICs' resource group (the identity is created there)
  --vm-a VM, --vm-b VM        the two VMs (A is the primary: priority 200, gets the floating IPs)
  --nic-a NIC, --nic-b NIC    their LAN NICs (in RG)
  --vnet VNET, --subnet NAME  the LAN subnet of the NICs
  --floating-ip ADDR[,PIP]    a floating IP, optionally with the public IP (name in RG, or ARM id)
                              that moves with it; repeatable

Options:
  --vnet-resource-group RG    the VNet's resource group (default: --resource-group)
  --route-table RT            a route table (name in --route-table-resource-group, or ARM id) whose
                              routes cloudha may change; repeatable
  --route-table-resource-group RG   default: --vnet-resource-group
  --route RT,NAME,PREFIX[,NEXT_HOP] a [[route]] for the configs (RT: name or id, also granted);
                              NEXT_HOP self_address (default: fast) or floating_ip; repeatable
  --nsg NSG                   a network security group the NICs reference (name in RG, or id)
  --move-mode MODE            two_step (default: remove the floating ipConfiguration from the
                              peer's NIC, then add it to the own one) or atomic (one
                              virtualNetworks/moveIpConfigurations POST, a preview feature; the
                              role is also assigned on the VNet, and both configs say
                              move_mode = "atomic")
  --linked ID                 the ARM id of an application security group, load balancer or
                              application gateway the floating ipConfiguration references (its
                              pools, NAT rules, frontends): moving the ipConfiguration needs their
                              join actions there; repeatable
  --subscription ID           default: the az CLI's current subscription
  --identity-name NAME        default: cloudha-pair
  --role-name NAME            default: "cloudha failover" (role names are unique per tenant)
  --operations-role-name NAME default: "cloudha failover operations"
  --name-a NAME, --name-b NAME  node names in the configs (default: the VM names)
  --lan-ip-a IP, --lan-ip-b IP  keepalive addresses (default: the NICs' primary private IPs)
  --cluster-id N              default: 1 (give each pair on a network its own)
  --port PORT                 keepalive UDP port (default: 5405)
  --key-path PATH             key_file written into the configs, absolute (default: /etc/cloudha/key)
  --out DIR                   write DIR/<name-a>.toml, DIR/<name-b>.toml and DIR/key (mode 0600);
                              without it the configs are printed. DIR is created 0700; an existing one
                              must be yours and not writable by others, and symlinks in it are refused
  --dry-run                   print every command and run none (queries answer "nothing exists")
  -h, --help                  this help

Example:
  scripts/setup-azure.sh --resource-group rg-fw --vnet-resource-group rg-net --vnet vnet-hub \
    --subnet lan --vm-a fw-a --vm-b fw-b --nic-a fw-a-lan --nic-b fw-b-lan \
    --floating-ip 10.0.1.100 --route rt-workloads,default-via-fw,0.0.0.0/0 --out ./cloudha-out
EOF
}

RG="" VNET_RG="" RT_RG="" VM_A="" VM_B="" NIC_A="" NIC_B="" VNET="" SUBNET="" SUB=""
IDENTITY_NAME=cloudha-pair ROLE_NAME="cloudha failover" OPS_ROLE_NAME="cloudha failover operations"
NAME_A="" NAME_B="" LAN_IP_A="" LAN_IP_B="" CLUSTER_ID=1 PORT=5405 KEY_PATH=/etc/cloudha/key OUT=""
FLOATING=() ROUTE_TABLES=() ROUTES=() NSGS=() MOVE_MODE=two_step LINKED=()

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
  --resource-group) RG=$value ;;
  --vnet-resource-group) VNET_RG=$value ;;
  --route-table-resource-group) RT_RG=$value ;;
  --vm-a) VM_A=$value ;;
  --vm-b) VM_B=$value ;;
  --nic-a) NIC_A=$value ;;
  --nic-b) NIC_B=$value ;;
  --vnet) VNET=$value ;;
  --subnet) SUBNET=$value ;;
  --floating-ip) FLOATING+=("$value") ;;
  --route-table) ROUTE_TABLES+=("$value") ;;
  --route) ROUTES+=("$value") ;;
  --nsg) NSGS+=("$value") ;;
  --move-mode) MOVE_MODE=$value ;;
  --linked) LINKED+=("$value") ;;
  --subscription) SUB=$value ;;
  --identity-name) IDENTITY_NAME=$value ;;
  --role-name) ROLE_NAME=$value ;;
  --operations-role-name) OPS_ROLE_NAME=$value ;;
  --name-a) NAME_A=$value ;;
  --name-b) NAME_B=$value ;;
  --lan-ip-a) LAN_IP_A=$value ;;
  --lan-ip-b) LAN_IP_B=$value ;;
  --cluster-id) CLUSTER_ID=$value ;;
  --port) PORT=$value ;;
  --key-path) KEY_PATH=$value ;;
  --out) OUT=$value ;;
  *) die "unknown flag $flag (see --help)" ;;
  esac
  shift 2
done

need "$RG" --resource-group
need "$VM_A" --vm-a
need "$VM_B" --vm-b
need "$NIC_A" --nic-a
need "$NIC_B" --nic-b
need "$VNET" --vnet
need "$SUBNET" --subnet
((${#FLOATING[@]} > 0)) || die "missing --floating-ip (at least one; see --help)"
VNET_RG=${VNET_RG:-$RG}
RT_RG=${RT_RG:-$VNET_RG}
NAME_A=${NAME_A:-$VM_A}
NAME_B=${NAME_B:-$VM_B}
# Every name against Azure's naming rules (see setup-lib.sh): these go into ARM ids, JMESPath
# filters, the role file (sed) and the configs.
check_azure_name "$RG" --resource-group resource-group
check_azure_name "$VNET_RG" --vnet-resource-group resource-group
check_azure_name "$RT_RG" --route-table-resource-group resource-group
check_azure_name "$VM_A" --vm-a vm
check_azure_name "$VM_B" --vm-b vm
check_azure_name "$NIC_A" --nic-a nic
check_azure_name "$NIC_B" --nic-b nic
check_azure_name "$VNET" --vnet vnet
check_azure_name "$SUBNET" --subnet subnet
[[ -z $SUB ]] || check_guid "$SUB" --subscription
check_node_name "$NAME_A" --name-a
check_node_name "$NAME_B" --name-b
[[ $NAME_A != "$NAME_B" ]] || die "--name-a and --name-b are both \"$NAME_A\"; each node needs its own name"
[[ $NIC_A != "$NIC_B" ]] || die "--nic-a and --nic-b are both \"$NIC_A\"; give each VM's LAN NIC"
check_re "$IDENTITY_NAME" --identity-name '^[A-Za-z0-9][A-Za-z0-9_-]{2,127}$' \
  "a managed identity name is 3-128 letters, digits, _ -, starting with a letter or digit"
# Custom role names may hold more, but these go into sed and JMESPath: no quotes, # or &.
check_re "$ROLE_NAME" --role-name '^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,63}$' \
  "use 1-64 letters, digits, spaces and . _ ( ) -, starting with a letter or digit"
check_re "$OPS_ROLE_NAME" --operations-role-name '^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,63}$' \
  "use 1-64 letters, digits, spaces and . _ ( ) -, starting with a letter or digit"
check_cluster_id "$CLUSTER_ID"
check_port "$PORT"
check_path "$KEY_PATH" --key-path
[[ -z $OUT ]] || OUT=$(out_dir "$OUT")
[[ -z $OUT ]] || precheck_out "$OUT" "$NAME_A.toml" "$NAME_B.toml" key
[[ -z $LAN_IP_A ]] || check_host_ipv4 "$LAN_IP_A" --lan-ip-a
[[ -z $LAN_IP_B ]] || check_host_ipv4 "$LAN_IP_B" --lan-ip-b
for spec in "${FLOATING[@]}"; do
  check_host_ipv4 "${spec%%,*}" --floating-ip
  [[ $spec != *,* ]] ||
    check_azure_ref "${spec#*,}" "--floating-ip (public IP)" public-ip Microsoft.Network/publicIPAddresses
done
for table in "${ROUTE_TABLES[@]}"; do
  check_azure_ref "$table" --route-table route-table Microsoft.Network/routeTables
done
for nsg in "${NSGS[@]}"; do
  check_azure_ref "$nsg" --nsg nsg Microsoft.Network/networkSecurityGroups
done
[[ $MOVE_MODE == two_step || $MOVE_MODE == atomic ]] ||
  die "--move-mode: $(shown "$MOVE_MODE") is not valid: write two_step (the default) or atomic"
# linked_kind ID: the kind of resource ID is (application security group, load balancer,
# application gateway), or nothing for another type.
linked_kind() {
  local LC_ALL=C type=${1#/subscriptions/*/resourceGroups/*/providers/}
  type=${type%/*}
  case ${type,,} in
  microsoft.network/applicationsecuritygroups) printf 'application security group' ;;
  microsoft.network/loadbalancers) printf 'load balancer' ;;
  microsoft.network/applicationgateways) printf 'application gateway' ;;
  esac
}
# check_linked ID: the ARM id of one of the resource types a floating ipConfiguration can
# reference beyond its subnet, public IP and NSG (their join actions are in the role). Only an id:
# a name alone does not say which type it is.
check_linked() {
  local id=$1 LC_ALL=C type kind child
  local re='^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/([^/]+/[^/]+)/[^/]+(/.*)?$'
  [[ $id =~ $re ]] ||
    die "--linked: $(shown "$id") is not valid: write the ARM id /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Network/TYPE/NAME of an application security group, load balancer or application gateway"
  type=${BASH_REMATCH[1]} child=${BASH_REMATCH[2]}
  kind=$(linked_kind "${id%"$child"}")
  [[ -n $kind ]] ||
    die "--linked: $(shown "$id") is not valid: its type is $(shown "$type"); write the id of a Microsoft.Network/applicationSecurityGroups, loadBalancers or applicationGateways resource"
  [[ -z $child ]] ||
    die "--linked: $(shown "$id") is not valid: write the id of the $kind itself, without $(shown "$child") (the assignment on it covers its pools and rules)"
  check_azure_ref "$id" --linked "linked resource" "$type"
}
for id in "${LINKED[@]}"; do
  check_linked "$id"
done
for spec in "${ROUTES[@]}"; do
  IFS=, read -r rt_table rt_name rt_prefix rt_hop rt_extra <<<"$spec"
  [[ -n $rt_table && -n $rt_name && -n $rt_prefix && -z $rt_extra && $spec != *$'\n'* ]] ||
    die "--route: $(shown "$spec") is not valid: write TABLE,NAME,PREFIX[,NEXT_HOP], e.g. rt-workloads,default-via-fw,0.0.0.0/0"
  check_azure_ref "$rt_table" "--route (table)" route-table Microsoft.Network/routeTables
  check_azure_name "$rt_name" "--route (name)" route
  check_cidr "$rt_prefix" "--route (prefix)"
  [[ -z $rt_hop || $rt_hop == self_address || $rt_hop == floating_ip ]] ||
    die "--route (next hop): $(shown "$rt_hop") is not valid: write self_address or floating_ip"
done

# --- ids --------------------------------------------------------------------------------------

if [[ -n $SUB ]]; then
  EXTRA_ARGS=(--subscription "$SUB")
elif [[ $DRY_RUN == true ]]; then
  printf 'would query: %s\n' "$(show_cmd az account show --query id --output tsv)"
  SUB='<subscription id>'
else
  query subscription SUB az account show --query id --output tsv
  [[ -n $SUB ]] || die "az account show gave no subscription id; log in (az login) or pass --subscription"
  check_guid "$SUB" "the subscription id from az account show"
fi

SUB_ID=/subscriptions/$SUB
# resource_id RG PROVIDER/TYPE NAME_OR_ID: an ARM id (a value that is an id already is kept).
resource_id() {
  if [[ $3 == /subscriptions/* ]]; then
    printf '%s' "$3"
  else
    printf '%s/resourceGroups/%s/providers/%s/%s' "$SUB_ID" "$1" "$2" "$3"
  fi
}
NIC_A_ID=$(resource_id "$RG" Microsoft.Network/networkInterfaces "$NIC_A")
NIC_B_ID=$(resource_id "$RG" Microsoft.Network/networkInterfaces "$NIC_B")
VM_A_ID=$(resource_id "$RG" Microsoft.Compute/virtualMachines "$VM_A")
VM_B_ID=$(resource_id "$RG" Microsoft.Compute/virtualMachines "$VM_B")
VNET_ID=$(resource_id "$VNET_RG" Microsoft.Network/virtualNetworks "$VNET")
SUBNET_ID=$VNET_ID/subnets/$SUBNET

# Route tables: --route-table and the tables of --route, each once.
RT_IDS=()
add_route_table() {
  local id existing
  id=$(resource_id "$RT_RG" Microsoft.Network/routeTables "$1")
  for existing in "${RT_IDS[@]}"; do
    [[ $existing != "$id" ]] || return 0
  done
  RT_IDS+=("$id")
}
for table in "${ROUTE_TABLES[@]}"; do
  add_route_table "$table"
done
for spec in "${ROUTES[@]}"; do
  add_route_table "${spec%%,*}"
done
PIP_IDS=()
for spec in "${FLOATING[@]}"; do
  if [[ $spec == *,* ]]; then
    PIP_IDS+=("$(resource_id "$RG" Microsoft.Network/publicIPAddresses "${spec#*,}")")
  fi
done
NSG_IDS=()
for nsg in "${NSGS[@]}"; do
  NSG_IDS+=("$(resource_id "$RG" Microsoft.Network/networkSecurityGroups "$nsg")")
done
# --linked ids, each once.
LINKED_IDS=()
for id in "${LINKED[@]}"; do
  for existing in "${LINKED_IDS[@]}"; do
    [[ ${existing,,} != "${id,,}" ]] || continue 2
  done
  LINKED_IDS+=("$id")
done

# --- 1. identity ------------------------------------------------------------------------------

say "1. managed identity $IDENTITY_NAME"
identity_query() {
  query identity IDENTITY_ROW az identity list --resource-group "$RG" \
    --query "[?name=='$IDENTITY_NAME'].[id, principalId, clientId]" --output tsv
}
identity_query
if [[ -z $IDENTITY_ROW ]]; then
  change identity az identity create --resource-group "$RG" --name "$IDENTITY_NAME" --output none
  identity_query
  if [[ $DRY_RUN == true ]]; then
    IDENTITY_ROW=$(printf '%s\t%s\t%s' "$(resource_id "$RG" Microsoft.ManagedIdentity/userAssignedIdentities "$IDENTITY_NAME")" \
      "<principal id of $IDENTITY_NAME>" "<client id of $IDENTITY_NAME>")
  fi
else
  unchanged "identity $IDENTITY_NAME exists"
fi
IFS=$'\t' read -r IDENTITY_ID PRINCIPAL_ID CLIENT_ID <<<"$IDENTITY_ROW"
[[ -n $IDENTITY_ID && -n $PRINCIPAL_ID && -n $CLIENT_ID ]] ||
  die "identity $IDENTITY_NAME: could not read its id, principalId and clientId (got $(shown "$IDENTITY_ROW"))"
# What az answered goes into JMESPath filters and the configs like the flags: checked the same way.
if [[ $DRY_RUN == false ]]; then
  check_azure_ref "$IDENTITY_ID" "the id of identity $IDENTITY_NAME" identity Microsoft.ManagedIdentity/userAssignedIdentities
  check_guid "$PRINCIPAL_ID" "the principalId of identity $IDENTITY_NAME"
  check_guid "$CLIENT_ID" "the clientId of identity $IDENTITY_NAME"
fi

# --- 2. custom roles --------------------------------------------------------------------------

# The role files' actions, one per line, sorted: what the role must grant, no more, no less.
role_actions() {
  grep -Eo '"Microsoft\.[A-Za-z]+/[A-Za-z/]+"' "$1" | tr -d '"' | sort
}

# ensure_role FILE NAME: create the role, or update it when its actions differ from FILE's.
ensure_role() {
  local file=$1 name=$2 rendered want have row
  rendered=$WORK_DIR/$(basename "$file")
  # The scope placeholder and the role name are the only run-time values.
  sed -e "s#/subscriptions/{subscriptionId}#$SUB_ID#" \
    -e "s#^\(  \"Name\": \)\".*\",#\1\"$name\",#" "$file" >"$rendered"
  want=$(role_actions "$file")
  query "role $name" row az role definition list --name "$name" --custom-role-only true \
    --scope "$SUB_ID" --query "[].[name, join(',', permissions[0].actions)]" --output tsv
  if [[ $DRY_RUN == true ]]; then
    printf '  (%s is deploy/azure/%s with AssignableScopes %s and Name "%s")\n' \
      "$rendered" "$(basename "$file")" "$SUB_ID" "$name"
  fi
  if [[ -z $row ]]; then
    change "role $name" az role definition create --role-definition "@$rendered" --output none
    return 0
  fi
  have=$(printf '%s\n' "${row#*$'\t'}" | tr ',' '\n' | sort)
  if [[ $have == "$want" ]]; then
    unchanged "role \"$name\" exists with the same actions"
  else
    say "role \"$name\" has other actions than $(basename "$file"): updating it"
    change "role $name" az role definition update --role-definition "@$rendered" --output none
  fi
}
say "2. custom roles"
ensure_role "$DEPLOY/cloudha-role.json" "$ROLE_NAME"
ensure_role "$DEPLOY/cloudha-operations-role.json" "$OPS_ROLE_NAME"

# --- 3. role assignments ----------------------------------------------------------------------

# Right after the identity or role was created, Azure AD / ARM may not know them yet.
REPLICATION='PrincipalNotFound|RoleDefinitionDoesNotExist|RoleDefinitionNotFound|Role .* doesn.t exist'

# ensure_assignment ROLE SCOPE WHAT
ensure_assignment() {
  local role=$1 scope=$2 what=$3 row
  query "role assignment on $what" row az role assignment list --scope "$scope" --role "$role" \
    --query "[?principalId=='$PRINCIPAL_ID'].id" --output tsv
  if [[ -n $row ]]; then
    unchanged "role \"$role\" on $what exists"
    return 0
  fi
  change_retrying "role assignment on $what" "$REPLICATION" az role assignment create \
    --assignee-object-id "$PRINCIPAL_ID" --assignee-principal-type ServicePrincipal \
    --role "$role" --scope "$scope" --output none
}
say "3. role assignments at the narrowest scopes"
ensure_assignment "$ROLE_NAME" "$NIC_A_ID" "NIC $NIC_A"
ensure_assignment "$ROLE_NAME" "$NIC_B_ID" "NIC $NIC_B"
ensure_assignment "$ROLE_NAME" "$SUBNET_ID" "subnet $VNET/$SUBNET"
if [[ $MOVE_MODE == atomic ]]; then
  # ARM authorizes virtualNetworks/moveIpConfigurations/action against the VNet itself.
  ensure_assignment "$ROLE_NAME" "$VNET_ID" "VNet $VNET"
fi
ensure_assignment "$ROLE_NAME" "$VM_A_ID" "VM $VM_A"
ensure_assignment "$ROLE_NAME" "$VM_B_ID" "VM $VM_B"
for id in "${RT_IDS[@]}"; do
  ensure_assignment "$ROLE_NAME" "$id" "route table ${id##*/}"
done
for id in "${PIP_IDS[@]}"; do
  ensure_assignment "$ROLE_NAME" "$id" "public IP ${id##*/}"
done
for id in "${NSG_IDS[@]}"; do
  ensure_assignment "$ROLE_NAME" "$id" "NSG ${id##*/}"
done
for id in "${LINKED_IDS[@]}"; do
  ensure_assignment "$ROLE_NAME" "$id" "$(linked_kind "$id") ${id##*/}"
done
ensure_assignment "$OPS_ROLE_NAME" "$SUB_ID" "subscription $SUB"

# --- 4. identity on both VMs ------------------------------------------------------------------

say "4. identity on both VMs"
for vm in "$VM_A" "$VM_B"; do
  # The keys of userAssignedIdentities are the identities' ids (ARM may change their case).
  attached=""
  # shellcheck disable=SC2016 # a JMESPath literal, not a shell expansion
  query "identity of VM $vm" attached az vm show --resource-group "$RG" --name "$vm" \
    --query 'keys(identity.userAssignedIdentities || `{}`)' --output tsv
  if grep -Fxqi -- "$IDENTITY_ID" <<<"$attached"; then
    unchanged "identity $IDENTITY_NAME on VM $vm"
  else
    change "identity on VM $vm" az vm identity assign --resource-group "$RG" --name "$vm" \
      --identities "$IDENTITY_ID" --output none
  fi
done

# --- 5. IP forwarding -------------------------------------------------------------------------

say "5. IP forwarding on the LAN NICs"
for nic in "$NIC_A" "$NIC_B"; do
  forwarding=""
  query "IP forwarding of NIC $nic" forwarding az network nic show --resource-group "$RG" \
    --name "$nic" --query enableIPForwarding --output tsv
  if [[ $forwarding == true ]]; then
    unchanged "IP forwarding on NIC $nic"
  else
    change "IP forwarding on NIC $nic" az network nic update --resource-group "$RG" --name "$nic" \
      --ip-forwarding true --output none
  fi
done

# --- 6. floating IPs --------------------------------------------------------------------------

say "6. floating IPs on NIC $NIC_A"
FLOATING_TOML=""
for spec in "${FLOATING[@]}"; do
  address=${spec%%,*}
  pip_id=""
  if [[ $spec == *,* ]]; then
    pip_id=$(resource_id "$RG" Microsoft.Network/publicIPAddresses "${spec#*,}")
  fi
  query "floating IP $address on NIC $NIC_A" on_a az network nic ip-config list --resource-group "$RG" \
    --nic-name "$NIC_A" --query "[?privateIPAddress=='$address'].name" --output tsv
  on_b=""
  if [[ -z $on_a ]]; then
    query "floating IP $address on NIC $NIC_B" on_b az network nic ip-config list --resource-group "$RG" \
      --nic-name "$NIC_B" --query "[?privateIPAddress=='$address'].name" --output tsv
  fi
  if [[ -n $on_a ]]; then
    unchanged "floating IP $address on NIC $NIC_A (ipConfiguration $on_a)"
  elif [[ -n $on_b ]]; then
    unchanged "floating IP $address on NIC $NIC_B (ipConfiguration $on_b; that node is active)"
  else
    create=(az network nic ip-config create --resource-group "$RG" --nic-name "$NIC_A"
      --name "cloudha-${address//./-}" --private-ip-address "$address" --subnet "$SUBNET_ID")
    [[ -z $pip_id ]] || create+=(--public-ip-address "$pip_id")
    change "floating IP $address on NIC $NIC_A" "${create[@]}" --output none
  fi
  FLOATING_TOML+=$'\n'"[[floating_ip]]"$'\n'"$(toml_kv address "$address")"
  [[ -z $pip_id ]] || FLOATING_TOML+=$'\n'"$(toml_kv public_ip "$pip_id")"
  FLOATING_TOML+=$'\n'
done

# --- 7. configs and key -----------------------------------------------------------------------

say "7. configs and keepalive key"
lan_ip() {
  local nic=$1 given=$2 var=$3 ip
  if [[ -n $given ]]; then
    printf -v "$var" '%s' "$given"
    return 0
  fi
  query "LAN address of NIC $nic" ip az network nic show --resource-group "$RG" --name "$nic" \
    --query "ipConfigurations[?primary].privateIPAddress | [0]" --output tsv
  if [[ $DRY_RUN == true ]]; then
    ip="<primary private IP of $nic>"
  fi
  [[ -n $ip ]] || die "NIC $nic has no primary private IP; pass the keepalive address with --lan-ip-a/--lan-ip-b"
  [[ $DRY_RUN == true ]] || check_host_ipv4 "$ip" "the primary private IP of NIC $nic (or pass --lan-ip-a/--lan-ip-b)"
  printf -v "$var" '%s' "$ip"
}
lan_ip "$NIC_A" "$LAN_IP_A" LAN_IP_A
lan_ip "$NIC_B" "$LAN_IP_B" LAN_IP_B

ROUTES_TOML=""
for spec in "${ROUTES[@]}"; do
  IFS=, read -r rt_table rt_name rt_prefix rt_hop <<<"$spec"
  ROUTES_TOML+=$'\n'"[[route]]"$'\n'"$(toml_kv table "$(resource_id "$RT_RG" Microsoft.Network/routeTables "$rt_table")")"
  ROUTES_TOML+=$'\n'"$(toml_kv name "$rt_name")"$'\n'"$(toml_kv prefix "$rt_prefix")"
  ROUTES_TOML+=$'\n'"$(toml_kv next_hop "${rt_hop:-self_address}")"$'\n'
done

# node_config NAME PRIORITY PEER OWN_IP PEER_IP OWN_NIC_ID PEER_NIC_ID
node_config() {
  config_head setup-azure.sh azure "$1" "$2" "$3" "$4" "$5" 300s
  printf '\n[provider]\n'
  toml_kv kind azure
  printf '\n[provider.azure]\n'
  toml_kv own_nic "$6"
  toml_kv peer_nic "$7"
  toml_kv identity_client_id "$CLIENT_ID"
  # two_step is the default and is left out, so configs written before the flag stay the same.
  [[ $MOVE_MODE != atomic ]] || toml_kv move_mode atomic
  printf '%s\n' "$FLOATING_TOML$ROUTES_TOML"
}
CONFIG_A=$(node_config "$NAME_A" 200 "$NAME_B" "$LAN_IP_A" "$LAN_IP_B" "$NIC_A_ID" "$NIC_B_ID")
CONFIG_B=$(node_config "$NAME_B" 100 "$NAME_A" "$LAN_IP_B" "$LAN_IP_A" "$NIC_B_ID" "$NIC_A_ID")
emit_configs "$OUT" "$KEY_PATH" "$NAME_A" "$CONFIG_A" "$NAME_B" "$CONFIG_B"

summary
