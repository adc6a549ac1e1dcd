#!/usr/bin/env bash
# Shared by scripts/setup-azure.sh and scripts/setup-aws.sh (sourced, not run): how commands are
# queried, changed, printed in --dry-run and stopped at the first error, and how the configs and
# the key are written idempotently.
#
# Rules every setup step follows:
# - query before changing: `query` reads the current state; `change` is only called when the state
#   differs, and each step says "unchanged" otherwise, so a second run changes nothing;
# - --dry-run: no command runs at all; queries are printed as "would query" and answer "nothing
#   exists", changes are printed as "would run";
# - the first failing command stops the script with the step, the command and its error.

# Set by the sourcing script.
PROG=${PROG:-setup}
DRY_RUN=${DRY_RUN:-false}
CHANGES=0
# Appended to every queried or changed command (az --subscription, aws --region).
EXTRA_ARGS=()

# Transient cloud errors right after creating an identity or a role (replication delays) are
# retried this many times, this many seconds apart.
RETRIES=${CLOUDHA_SETUP_RETRIES:-12}
RETRY_WAIT=${CLOUDHA_SETUP_RETRY_WAIT:-10}

say() {
  printf '%s: %s\n' "$PROG" "$*"
}

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 1
}

# A command as a copy-pasteable shell line.
show_cmd() {
  local arg line="" q="'"
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      :
    elif [[ ! $arg =~ [\"\$\`\\!] ]]; then
      arg="\"$arg\""
    else
      arg="$q${arg//$q/$q\\$q$q}$q"
    fi
    line+="${line:+ }$arg"
  done
  printf '%s' "$line"
}

# Where a failed command's stderr goes (removed on exit).
ERR_FILE=$(mktemp)
WORK_DIR=$(mktemp -d)

fail_step() {
  local step=$1 rc=$2
  shift 2
  {
    printf '%s: error: step "%s" failed (exit %s)\n' "$PROG" "$step" "$rc"
    printf '  command: %s\n' "$(show_cmd "$@")"
    if [[ -s $ERR_FILE ]]; then
      sed 's/^/  | /' "$ERR_FILE"
    fi
    printf '  nothing after this step was done; fix the cause and run the script again (it skips what exists)\n'
  } >&2
  exit 1
}

# query STEP VAR CMD...: the command's stdout (trailing newlines trimmed) into VAR.
# In --dry-run, prints the query and sets VAR to "" (nothing exists).
query() {
  local step=$1 var=$2
  shift 2
  set -- "$@" "${EXTRA_ARGS[@]}"
  if [[ $DRY_RUN == true ]]; then
    printf 'would query: %s\n' "$(show_cmd "$@")"
    printf -v "$var" '%s' ""
    return 0
  fi
  local out rc=0
  out=$("$@" 2>"$ERR_FILE") || rc=$?
  if ((rc != 0)); then
    fail_step "$step" "$rc" "$@"
  fi
  printf -v "$var" '%s' "$out"
}

# query_absent STEP VAR PATTERN CMD...: like query, but a failure whose stderr matches PATTERN
# (e.g. NoSuchEntity) means "does not exist" and sets VAR to "".
query_absent() {
  local step=$1 var=$2 pattern=$3
  shift 3
  set -- "$@" "${EXTRA_ARGS[@]}"
  if [[ $DRY_RUN == true ]]; then
    printf 'would query: %s\n' "$(show_cmd "$@")"
    printf -v "$var" '%s' ""
    return 0
  fi
  local out rc=0
  out=$("$@" 2>"$ERR_FILE") || rc=$?
  if ((rc != 0)); then
    if grep -Eq "$pattern" "$ERR_FILE"; then
      printf -v "$var" '%s' ""
      return 0
    fi
    fail_step "$step" "$rc" "$@"
  fi
  printf -v "$var" '%s' "$out"
}

# change STEP CMD...: run a mutating command (printed first); in --dry-run only print it.
change() {
  change_retrying "$1" '' "${@:2}"
}

# change_retrying STEP PATTERN CMD...: like change, and retried while its error matches PATTERN
# (an empty PATTERN never retries).
change_retrying() {
  local step=$1 pattern=$2
  shift 2
  set -- "$@" "${EXTRA_ARGS[@]}"
  CHANGES=$((CHANGES + 1))
  if [[ $DRY_RUN == true ]]; then
    printf 'would run: %s\n' "$(show_cmd "$@")"
    return 0
  fi
  printf 'running: %s\n' "$(show_cmd "$@")"
  local attempt=1 rc
  while true; do
    rc=0
    "$@" >/dev/null 2>"$ERR_FILE" || rc=$?
    if ((rc == 0)); then
      return 0
    fi
    if [[ -n $pattern ]] && ((attempt < RETRIES)) && grep -Eq "$pattern" "$ERR_FILE"; then
      say "$step: not visible yet ($(grep -Eo "$pattern" "$ERR_FILE" | head -n 1)); retry $attempt/$((RETRIES - 1)) in ${RETRY_WAIT}s"
      sleep "$RETRY_WAIT"
      attempt=$((attempt + 1))
      continue
    fi
    fail_step "$step" "$rc" "$@"
  done
}

unchanged() {
  say "$*: unchanged"
}

warn() {
  printf '%s: warning: %s\n' "$PROG" "$*" >&2
}

# ---- the output directory and its files ----------------------------------------------------------
#
# The scripts run as root and write where --out says, so that directory is treated like a careful
# daemon treats its state: it must be ours and writable by nobody else (otherwise another user can
# plant a key of known value, or a symlink that makes root overwrite any file), and every file in
# it is created O_EXCL (mktemp in the same directory) and renamed into place, never opened through
# a name someone else could have prepared.

MY_UID=$(id -u)

# mode_of PATH / owner_of PATH: of PATH itself (a symlink is refused before these are asked).
mode_of() {
  stat -c %a -- "$1"
}
owner_of() {
  stat -c %u -- "$1"
}

# check_out_dir DIR: DIR is a directory (not a symlink) owned by us that group and others cannot
# write, and no other user can rename it away: each parent is owned by us or root and, if others
# can write it, sticky (like /tmp).
check_out_dir() {
  local dir=$1 owner mode parent
  [[ ! -L $dir ]] || die "--out: $dir is a symlink; pass the directory itself (a link can be swapped between runs)"
  [[ -d $dir ]] || die "--out: $dir exists and is not a directory; pass a directory or a new path"
  owner=$(owner_of "$dir") mode=$(mode_of "$dir")
  ((owner == MY_UID)) ||
    die "--out: $dir is owned by uid $owner, not by us (uid $MY_UID): its owner could plant files in it; pass a directory of ours or a new path"
  (((8#$mode & 8#022) == 0)) ||
    die "--out: $dir is writable by group or others (mode $mode): they could plant a key or a symlink in it; chmod go-w $(show_cmd "$dir") or pass a new path"
  # Both the parents as written and as resolved: a symlink among them is checked itself (who
  # owns it can repoint it) and so is the chain it leads to.
  check_parents "$dir" "$(dirname -- "$dir")"
  parent=$(realpath -e -- "$dir/..") || die "--out: cannot resolve the parent of $dir"
  check_parents "$dir" "$parent"
}

# check_parents DIR PARENT: PARENT and each directory above it are owned by us or root and, if
# group or others can write them, sticky: nobody else can rename DIR away and put another there.
check_parents() {
  local dir=$1 parent=$2 owner mode
  while true; do
    owner=$(owner_of "$parent") mode=$(mode_of "$parent")
    ((owner == MY_UID || owner == 0)) ||
      die "--out: $parent (above $dir) is owned by uid $owner: that user could replace $dir; pass a path under directories of ours or root's"
    [[ -L $parent ]] || (((8#$mode & 8#022) == 0 || (8#$mode & 8#1000) != 0)) ||
      die "--out: $parent (above $dir) is writable by group or others without the sticky bit (mode $mode): they could replace $dir; pass another path"
    [[ $parent != / ]] || break
    parent=$(dirname -- "$parent")
  done
}

# check_own_file PATH WHAT: an existing PATH in the output directory is a regular file of ours.
check_own_file() {
  local path=$1 what=$2 owner
  [[ ! -L $path ]] ||
    die "--out: $what $path is a symlink: refusing to follow it (it could point at any file root can write); remove it and run again"
  [[ -f $path ]] || die "--out: $what $path exists and is not a regular file; remove it and run again"
  owner=$(owner_of "$path")
  ((owner == MY_UID)) || die "--out: $what $path is owned by uid $owner, not by us (uid $MY_UID); remove it and run again"
}

# precheck_out DIR FILE...: before anything runs, an existing DIR and the FILEs already in it
# must be safe to write (checked again when they are written).
precheck_out() {
  local dir=$1 name above
  shift
  if [[ ! -e $dir && ! -L $dir ]]; then
    # To be created: the directories it will be created under must be safe already.
    above=$(dirname -- "$dir")
    while [[ ! -e $above && ! -L $above ]]; do
      above=$(dirname -- "$above")
    done
    check_parents "$dir" "$above"
    check_parents "$dir" "$(realpath -e -- "$above")"
    return 0
  fi
  check_out_dir "$dir"
  for name in "$@"; do
    [[ ! -e $dir/$name && ! -L $dir/$name ]] || check_own_file "$dir/$name" "$([[ $name == *.toml ]] && echo config || echo key)"
  done
}

# Temporary files not yet renamed into place (removed on exit).
TMP_FILES=()
trap 'rm -rf "$ERR_FILE" "$WORK_DIR" "${TMP_FILES[@]}"' EXIT

# new_tmp VAR DIR: a new file in DIR, created O_EXCL with mode 0600 (mktemp), into VAR.
new_tmp() {
  local made # not named like the caller's VAR: printf -v would set this local instead
  made=$(mktemp -- "$2/.cloudha-setup.XXXXXXXX") || die "could not create a temporary file in $2"
  TMP_FILES+=("$made")
  printf -v "$1" '%s' "$made"
}

# write_file PATH MODE CONTENT: write CONTENT to PATH unless it already holds exactly that.
write_file() {
  local path=$1 mode=$2 content=$3 tmp have
  if [[ -e $path || -L $path ]]; then
    check_own_file "$path" config
    if [[ $(<"$path") == "$content" ]]; then
      have=$(mode_of "$path")
      if [[ $have != "${mode#0}" ]]; then
        CHANGES=$((CHANGES + 1))
        if [[ $DRY_RUN == true ]]; then
          printf 'would run: %s\n' "$(show_cmd chmod "$mode" "$path")"
        else
          chmod "$mode" -- "$path" || die "could not chmod $path"
          say "file $path: mode fixed to $mode (it was $have)"
        fi
      else
        unchanged "file $path"
      fi
      return 0
    fi
  fi
  CHANGES=$((CHANGES + 1))
  if [[ $DRY_RUN == true ]]; then
    printf 'would write: %s (mode %s):\n%s\n' "$path" "$mode" "$content"
    return 0
  fi
  new_tmp tmp "$(dirname -- "$path")"
  printf '%s\n' "$content" >"$tmp" || die "could not write $tmp"
  chmod "$mode" -- "$tmp" || die "could not chmod $tmp"
  # rename(2) replaces whatever name is there (a symlink planted after the check included): it
  # never writes through it.
  mv -fT -- "$tmp" "$path" || die "could not rename $tmp to $path"
  say "wrote $path"
}

# write_key PATH: a random keepalive key (32 random bytes, base64), mode 0600; an existing key
# is kept (both nodes must share it, and a running pair must not lose it).
#
# An existing key that group or others could read is fixed to 0600 and reported, not silently
# kept and not regenerated: the key in --out may be the one a running pair already holds (--out
# /etc/cloudha), and a new key on one node only would make each node drop the other's keepalives
# and both go active. Whether its value leaked is for the operator to judge, so the warning says
# how to rotate it (delete it, run again, install the new key on both nodes).
write_key() {
  local path=$1 mode tmp
  if [[ -e $path || -L $path ]]; then
    check_own_file "$path" key
    [[ -s $path ]] || die "key $path is empty; remove it and run again (a new one is written)"
    mode=$(mode_of "$path")
    if (((8#$mode & 8#077) != 0)); then
      CHANGES=$((CHANGES + 1))
      if [[ $DRY_RUN == true ]]; then
        printf 'would run: %s\n' "$(show_cmd chmod 0600 "$path")"
        warn "key $path is mode $mode: readable by group or others"
        return 0
      fi
      chmod 0600 -- "$path" || die "could not chmod $path"
      say "key $path: mode fixed to 0600 (it was $mode)"
      warn "key $path was mode $mode: whoever could read it may know the pair's key; to rotate it, delete it, run again and install the new key on both nodes"
      return 0
    fi
    unchanged "key $path exists"
    return 0
  fi
  CHANGES=$((CHANGES + 1))
  if [[ $DRY_RUN == true ]]; then
    printf 'would write: %s (mode 0600): 32 random bytes, base64\n' "$path"
    return 0
  fi
  new_tmp tmp "$(dirname -- "$path")"
  head -c 32 /dev/urandom | base64 >"$tmp" || die "could not write the key $tmp"
  # link(2) fails if the name exists: a key that appeared meanwhile is never replaced.
  ln -- "$tmp" "$path" || die "could not create the key $path"
  rm -f -- "$tmp"
  say "wrote $path (random key, mode 0600)"
}

# emit_configs OUT_DIR KEY_PATH NAME_A CONFIG_A NAME_B CONFIG_B: into OUT_DIR (configs and key),
# or on stdout when OUT_DIR is empty.
emit_configs() {
  local out=$1 key_path=$2 name_a=$3 config_a=$4 name_b=$5 config_b=$6
  if [[ -z $out ]]; then
    printf '# ---- %s: /etc/cloudha/cloudha.toml on %s ----\n%s\n' "$name_a" "$name_a" "$config_a"
    printf '# ---- %s: /etc/cloudha/cloudha.toml on %s ----\n%s\n' "$name_b" "$name_b" "$config_b"
    printf '# ---- key: the same random key on both nodes, mode 0600 ----\n'
    printf '# (umask 077; head -c 32 /dev/urandom | base64 > %s)\n' "$(show_cmd "$key_path")"
    return 0
  fi
  if [[ -e $out || -L $out ]]; then
    check_out_dir "$out"
  else
    CHANGES=$((CHANGES + 1))
    if [[ $DRY_RUN == true ]]; then
      printf 'would run: %s\n' "$(show_cmd mkdir -p -m 0700 "$out")"
    else
      # Without -p for the last component: it fails if the name appeared meanwhile.
      { mkdir -p -- "$(dirname -- "$out")" && mkdir -m 0700 -- "$out"; } ||
        die "could not create the output directory $out"
      check_out_dir "$out"
    fi
  fi
  write_file "$out/$name_a.toml" 0644 "$config_a"
  write_file "$out/$name_b.toml" 0644 "$config_b"
  write_key "$out/key"
}

summary() {
  if ((CHANGES == 0)); then
    say "done: nothing changed (everything was already set up)"
  elif [[ $DRY_RUN == true ]]; then
    say "dry run: $CHANGES change(s) would be made; nothing was run"
  else
    say "done: $CHANGES change(s) made"
  fi
}

# need VALUE FLAG: stop with usage help when a required flag is missing.
need() {
  [[ -n $1 ]] || die "missing $2 (see --help)"
}

# ---- flag values ---------------------------------------------------------------------------------
#
# Checked before anything runs (a typo must not half-configure a pair), against the cloud's own
# naming rules: a value crosses the CLI's argv, JMESPath filters, sed and TOML, so one that
# passes can hold no quote, newline or option dash for any of them. Each refusal is one line
# naming the flag and the rule.

# shown VALUE: VALUE for an error message: quoted, on one line, at most 200 characters.
shown() {
  local LC_ALL=C v=$1
  ((${#v} <= 200)) || v="${v:0:200}..."
  if [[ $v == *[![:print:]]* || $v == *[\"\\]* ]]; then
    printf '%q' "$v"
  else
    printf '"%s"' "$v"
  fi
}

# check_re VALUE FLAG REGEX RULE: VALUE matches REGEX (in the C locale: ASCII only).
check_re() {
  local LC_ALL=C
  [[ $1 =~ $3 ]] || die "$2: $(shown "$1") is not valid: $4"
}

# Azure naming rules (learn.microsoft.com, "Naming rules and restrictions for Azure resources").
AZ_NAME_RE='^[A-Za-z0-9]([A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?$'
AZ_NAME_RULE='1-80 letters, digits, _ . -, starting with a letter or digit and ending with a letter, digit or _'

# check_azure_name VALUE FLAG KIND: KIND is nic, subnet, route-table, route, nsg, public-ip, vnet,
# resource-group or vm.
check_azure_name() {
  local value=$1 flag=$2 kind=$3
  case $kind in
  vnet)
    check_re "$value" "$flag" '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}[A-Za-z0-9_]$' \
      "a VNet name is 2-64 letters, digits, _ . -, starting with a letter or digit and ending with a letter, digit or _"
    ;;
  resource-group)
    check_re "$value" "$flag" '^[A-Za-z0-9_.()-]{0,89}[A-Za-z0-9_()-]$' \
      "a resource group name is 1-90 letters, digits, _ . ( ) -, not ending with ."
    ;;
  vm)
    check_re "$value" "$flag" '^[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$' \
      "a (Linux) VM name is 1-64 letters, digits, . -, starting and ending with a letter or digit"
    ;;
  *)
    check_re "$value" "$flag" "$AZ_NAME_RE" "a $kind name is $AZ_NAME_RULE"
    ;;
  esac
}

GUID_RE='^[0-9A-Fa-f]{8}-([0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$'

check_guid() {
  check_re "$1" "$2" "$GUID_RE" "a GUID is 8-4-4-4-12 hex digits, e.g. 11111111-2222-3333-4444-555555555555"
}

# check_azure_ref VALUE FLAG KIND TYPE: a KIND name (in the default resource group) or the ARM id
# of a TYPE (e.g. Microsoft.Network/routeTables) resource whose parts follow the naming rules.
check_azure_ref() {
  local value=$1 flag=$2 kind=$3 type=$4 LC_ALL=C
  if [[ $value != /* ]]; then
    check_azure_name "$value" "$flag" "$kind"
    return 0
  fi
  local re='^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/([^/]+/[^/]+)/([^/]+)$'
  [[ $value =~ $re && ${BASH_REMATCH[3],,} == "${type,,}" ]] ||
    die "$flag: $(shown "$value") is not valid: write a $kind name or its id /subscriptions/SUB/resourceGroups/RG/providers/$type/NAME"
  local sub=${BASH_REMATCH[1]} rg=${BASH_REMATCH[2]} name=${BASH_REMATCH[4]}
  check_guid "$sub" "$flag (its subscription)"
  check_azure_name "$rg" "$flag (its resource group)" resource-group
  check_azure_name "$name" "$flag (its name)" "$kind"
}

IPV4_OCTET='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
IPV4_BODY="$IPV4_OCTET\\.$IPV4_OCTET\\.$IPV4_OCTET\\.$IPV4_OCTET"
IPV4_RE="^$IPV4_BODY\$"

# check_ipv4 ADDR FLAG: four decimal octets 0-255, no leading zeros (010 is octal to some parsers).
check_ipv4() {
  check_re "$1" "$2" "$IPV4_RE" "an IPv4 address is four decimal octets 0-255 without leading zeros, e.g. 10.0.1.100"
}

# ipv4_int ADDR: ADDR (checked) as a 32-bit number.
ipv4_int() {
  local IFS=. a b c d
  read -r a b c d <<<"$1"
  printf '%s' $(((a << 24) | (b << 16) | (c << 8) | d))
}

# check_host_ipv4 ADDR FLAG: an address a NIC can hold (not 0/8, loopback, link-local, multicast,
# reserved or broadcast).
check_host_ipv4() {
  check_ipv4 "$1" "$2"
  local first=${1%%.*} second
  second=${1#*.} second=${second%%.*}
  if ((first == 0 || first == 127 || first >= 224)) || ((first == 169 && second == 254)); then
    die "$2: $(shown "$1") is not valid: a NIC's address is unicast, not in 0/8, 127/8, 169.254/16 or 224/3"
  fi
}

# check_cidr CIDR FLAG: ADDR/LEN with LEN 0-32 and no host bits set.
check_cidr() {
  local cidr=$1 flag=$2 addr len mask net
  check_re "$cidr" "$flag" "^$IPV4_BODY/(3[0-2]|[12][0-9]|[0-9])\$" \
    "a prefix is ADDR/LEN with an IPv4 address and LEN 0-32, e.g. 0.0.0.0/0 or 10.1.0.0/16"
  addr=${cidr%/*} len=${cidr#*/}
  mask=$(((0xffffffff << (32 - len)) & 0xffffffff))
  net=$(($(ipv4_int "$addr") & mask))
  ((net == $(ipv4_int "$addr"))) ||
    die "$flag: $(shown "$cidr") is not valid: host bits are set; write $((net >> 24)).$(((net >> 16) & 255)).$(((net >> 8) & 255)).$((net & 255))/$len"
}

# check_path PATH FLAG: absolute, printable ASCII (no control characters), no . or .. component,
# not ending with /.
check_path() {
  local path=$1 flag=$2 LC_ALL=C
  [[ $path == /* ]] || die "$flag: $(shown "$path") is not valid: write an absolute path (it must not depend on the working directory)"
  [[ $path != *[![:print:]]* ]] ||
    die "$flag: $(shown "$path") is not valid: a path is printable ASCII, without control characters"
  [[ $path != */ && /$path/ != */./* && /$path/ != */../* ]] ||
    die "$flag: $(shown "$path") is not valid: a path names a file, without . or .. components or a trailing /"
  ((${#path} <= 1024)) || die "$flag: $(shown "$path") is not valid: a path is at most 1024 characters"
}

# check_aws_id VALUE FLAG PREFIX WHAT: an AWS resource id PREFIX-<8 or 17 hex digits>.
check_aws_id() {
  check_re "$1" "$2" "^$3-[0-9a-f]{8,17}\$" "$4 is $3- and 8-17 lowercase hex digits, e.g. $3-0123456789abcdef0"
}

check_node_name() {
  check_re "$1" "$2" '^[A-Za-z0-9._-]{1,32}$' "a node name is 1-32 of A-Za-z0-9._-"
}

check_cluster_id() {
  check_re "$1" --cluster-id '^(0|[1-9][0-9]{0,8})$' "a cluster id is a number 0..999999999"
}

check_port() {
  check_re "$1" --port '^[1-9][0-9]{0,4}$' "a UDP port is 1..65535"
  (($1 <= 65535)) || die "--port: $(shown "$1") is not valid: a UDP port is 1..65535"
}

# out_dir VALUE: --out as an absolute path (a relative one is taken from the working directory),
# normalized without following symlinks (a symlinked --out is refused later, not resolved).
out_dir() {
  local dir=$1
  [[ $dir == /* ]] || dir=$PWD/$dir
  dir=$(realpath -m -s -- "$dir") || die "--out: $(shown "$1") is not valid: cannot make it absolute"
  check_path "$dir" --out
  printf '%s' "$dir"
}

# ---- TOML ----------------------------------------------------------------------------------------

# toml_string VALUE: VALUE as a TOML basic string, quotes included. Every string the scripts write
# into a config goes through here: \ and " are escaped and control characters written as \uXXXX,
# so no value can end its string or start a line (the flag checks refuse such values anyway).
toml_string() {
  local LC_ALL=C s=$1 out="" c i
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  if [[ $s == *[[:cntrl:]]* ]]; then
    for ((i = 0; i < ${#s}; i++)); do
      c=${s:i:1}
      if [[ $c == [[:cntrl:]] ]]; then
        printf -v c '\\u%04X' "'$c"
      fi
      out+=$c
    done
    s=$out
  fi
  printf '"%s"' "$s"
}

# toml_kv KEY VALUE: one `KEY = "VALUE"` line.
toml_kv() {
  printf '%s = %s\n' "$1" "$(toml_string "$2")"
}

# config_head SCRIPT PROVIDER NAME PRIORITY PEER OWN_IP PEER_IP DEADLINE: the part of a node's
# config both setup scripts write the same way (cluster, node, peer, keepalive path, failover).
# Uses CLUSTER_ID, KEY_PATH and PORT (set and checked by the calling script; the numbers are
# checked to be digits, every string goes through toml_string).
# shellcheck disable=SC2153
config_head() {
  printf '# cloudha config for node %s, written by scripts/%s. Check: cloudha config check <this file>\n' "$3" "$1"
  printf '# Settings outside [node], [peer], [keepalive.path] and [provider.%s] must be the same on both nodes.\n' "$2"
  printf '\n[cluster]\nid = %d\n' "$CLUSTER_ID"
  toml_kv key_file "$KEY_PATH"
  printf '\n[node]\n'
  toml_kv name "$3"
  printf 'priority = %d\n' "$4"
  printf '\n[peer]\n'
  toml_kv name "$5"
  printf '\n[[keepalive.path]]\n'
  toml_kv name lan
  toml_kv bind "$6:$PORT"
  toml_kv peer "$7:$PORT"
  printf '\n[failover]\n'
  toml_kv deadline "$8"
}
