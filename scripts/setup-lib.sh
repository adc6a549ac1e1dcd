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
trap 'rm -rf "$ERR_FILE" "$WORK_DIR"' EXIT

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

# write_file PATH MODE CONTENT: write CONTENT to PATH unless it already holds exactly that.
write_file() {
  local path=$1 mode=$2 content=$3
  if [[ -f $path ]] && [[ $(cat "$path") == "$content" ]]; then
    unchanged "file $path"
    return 0
  fi
  CHANGES=$((CHANGES + 1))
  if [[ $DRY_RUN == true ]]; then
    printf 'would write: %s (mode %s):\n%s\n' "$path" "$mode" "$content"
    return 0
  fi
  (umask 077 && printf '%s\n' "$content" >"$path") || die "could not write $path"
  chmod "$mode" "$path" || die "could not chmod $path"
  say "wrote $path"
}

# write_key PATH: a random keepalive key (32 random bytes, base64), mode 0600; an existing key
# is kept (both nodes must share it, and a running pair must not lose it).
write_key() {
  local path=$1
  if [[ -f $path ]]; then
    unchanged "key $path exists"
    return 0
  fi
  CHANGES=$((CHANGES + 1))
  if [[ $DRY_RUN == true ]]; then
    printf 'would write: %s (mode 0600): 32 random bytes, base64\n' "$path"
    return 0
  fi
  (umask 077 && head -c 32 /dev/urandom | base64 >"$path") || die "could not write the key $path"
  chmod 0600 "$path" || die "could not chmod $path"
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
    printf '# (umask 077; head -c 32 /dev/urandom | base64 > %s)\n' "$key_path"
    return 0
  fi
  if [[ ! -d $out ]]; then
    CHANGES=$((CHANGES + 1))
    if [[ $DRY_RUN == true ]]; then
      printf 'would run: %s\n' "$(show_cmd mkdir -p -m 0700 "$out")"
    else
      { mkdir -p "$out" && chmod 0700 "$out"; } || die "could not create the output directory $out"
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

# Flag values are checked before anything runs: a typo must not half-configure a pair.
check_ipv4() {
  local ip=$1 flag=$2 octet
  [[ $ip =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] ||
    die "$flag: $ip is not an IPv4 address (write e.g. 10.0.1.100)"
  for octet in "${BASH_REMATCH[@]:1}"; do
    ((10#$octet <= 255)) || die "$flag: $ip is not an IPv4 address (octet $octet > 255)"
  done
}

check_node_name() {
  [[ $1 =~ ^[A-Za-z0-9._-]{1,32}$ ]] ||
    die "$2: \"$1\" is not a node name (1-32 of A-Za-z0-9._-); pass one with $2"
}

# config_head SCRIPT PROVIDER NAME PRIORITY PEER OWN_IP PEER_IP DEADLINE: the part of a node's
# config both setup scripts write the same way (cluster, node, peer, keepalive path, failover).
# Uses CLUSTER_ID, KEY_PATH and PORT (set by the calling script).
# shellcheck disable=SC2153
config_head() {
  cat <<EOF
# cloudha config for node $3, written by scripts/$1. Check: cloudha config check <this file>
# Settings outside [node], [peer], [keepalive.path] and [provider.$2] must be the same on both nodes.

[cluster]
id = $CLUSTER_ID
key_file = "$KEY_PATH"

[node]
name = "$3"
priority = $4

[peer]
name = "$5"

[[keepalive.path]]
name = "lan"
bind = "$6:$PORT"
peer = "$7:$PORT"

[failover]
deadline = "$8"
EOF
}
