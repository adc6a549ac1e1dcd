#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: target/debian/cloudha_<version>_<arch>.deb.
#   scripts/package-deb.sh                 release build (stripped, fat LTO: minutes on 2 cores)
#   scripts/package-deb.sh --profile dev   the debug binary (stripped too): what the package test
#                                          uses, so CI does not pay for a release build
# Options: --no-build (use the binary already built for the profile), --output DIR,
# --deb-version V (for the upgrade test), --no-lintian. lintian runs by default and fails the
# script on any error. cargo-deb comes pinned from crates.io (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_DEB=/opt/cargo-deb/bin/cargo-deb
PROFILE=release
BUILD=true
LINTIAN=true
OUTPUT=target/debian
DEB_VERSION=()

die() {
  echo "package-deb: $*" >&2
  exit 2
}

while (($# > 0)); do
  case $1 in
  --profile) PROFILE=${2:?--profile needs release or dev} && shift ;;
  --no-build) BUILD=false ;;
  --no-lintian) LINTIAN=false ;;
  --output) OUTPUT=${2:?--output needs a directory} && shift ;;
  --deb-version) DEB_VERSION=(--deb-version "${2:?--deb-version needs a version}") && shift ;;
  -h | --help)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
# cargo and cargo-deb both follow CARGO_TARGET_DIR (a release build in its own directory does
# not hold the lock of the debug one).
TARGET=${CARGO_TARGET_DIR:-target}
case $PROFILE in
release) BIN=$TARGET/release/cloudha ;;
dev) BIN=$TARGET/debug/cloudha ;;
*) die "--profile: $PROFILE is not release or dev" ;;
esac

if ! "$CARGO_DEB" --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  die "cargo-deb $CARGO_DEB_VERSION is not at $CARGO_DEB: run scripts/install-deps.sh"
fi
if [[ $BUILD == true ]]; then
  cargo build --locked --profile "$PROFILE" --bin cloudha
fi
[[ -x $BIN ]] || die "$BIN is not built: drop --no-build"

# Generated from the binary: man pages (gzipped, reproducibly) and shell completions; the unit
# with the package's binary path.
ASSETS=target/deb-assets
rm -rf "$ASSETS"
mkdir -p "$ASSETS"
"$BIN" generate-assets "$ASSETS"
gzip -9n "$ASSETS"/man/*.1
sed 's|/usr/local/bin/cloudha|/usr/bin/cloudha|g' deploy/cloudha.service >"$ASSETS/cloudha.service"
if grep -q /usr/local/ "$ASSETS/cloudha.service"; then
  die "the packaged unit still names /usr/local"
fi

mkdir -p "$OUTPUT"
# --strip: the dev profile keeps debug info for our code; the package ships it stripped.
DEB=$("$CARGO_DEB" --no-build --profile "$PROFILE" --strip --no-dbgsym --quiet \
  --output "$OUTPUT" "${DEB_VERSION[@]}" | tail -n 1)
[[ -f $DEB ]] || die "cargo-deb did not report the package it wrote (got: $DEB)"

if [[ $LINTIAN == true ]]; then
  command -v lintian >/dev/null || die "lintian is missing: run scripts/install-deps.sh"
  # --fail-on error: warnings are listed, errors fail the build.
  lintian --fail-on error --tag-display-limit 0 "$DEB" >&2
fi
echo "$DEB"
