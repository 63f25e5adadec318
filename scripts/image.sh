#!/usr/bin/env bash
# image.sh: build the hab-bootstrap image without a container engine, and prove it runs.
#
# The Dockerfile needs a Docker/BuildKit engine and the rust base image, neither of which is
# available everywhere (nothing can be pulled here). This script does the same thing daemonlessly:
#   1. the Dockerfile's build command: cargo build --release --locked --target <arch>-unknown-linux-musl
#      (rustup target and musl-tools installed if missing), and checks the binary is static;
#   2. assembles an OCI image layout with umoci (Debian package): scratch + /hab-bootstrap, user
#      65532:65532, entrypoint /hab-bootstrap, exactly the Dockerfile's final stage;
#   3. unpacks that image again (as a runtime would) and runs the binary from its root filesystem,
#      chrooted, as the image's user: `--version`, `certs generate` into a tmpfs-less root (must
#      fail: read-only scratch has no /tmp) and `webhook --help`.
#
#   scripts/image.sh [OUT_DIR]      default OUT_DIR: target/image (OCI layout in OUT_DIR/oci)
#
# Then, e.g.: skopeo copy oci:target/image/oci:0.1.0 docker://registry.example.com/hab-bootstrap:0.1.0
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=$(mkdir -p "${1:-target/image}" && cd "${1:-target/image}" && pwd)
ARCH=$(uname -m)
TARGET="$ARCH-unknown-linux-musl"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
TAG=${HAB_IMAGE_TAG:-$VERSION}
case $ARCH in x86_64) OCI_ARCH=amd64 ;; aarch64) OCI_ARCH=arm64 ;; *) OCI_ARCH=$ARCH ;; esac

T0=$SECONDS
step() { printf '\n== [%3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
die() { printf 'image.sh: ERROR: %s\n' "$*" >&2; exit 1; }

apt_install() { # packages...
  local sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

step "toolchain: rustup target $TARGET, musl-gcc, umoci"
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2 ||
  die "rustup target add $TARGET failed (offline?): see docs/install.md, 'Container image'"
missing=()
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v umoci >/dev/null || missing+=(umoci)
command -v file >/dev/null || missing+=(file)
((${#missing[@]} == 0)) || apt_install "${missing[@]}"

step "cargo build --release --locked --target $TARGET --bin hab-bootstrap (the Dockerfile's command)"
# A target directory of its own: the release musl build neither waits for nor invalidates the
# everyday debug builds in target/.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/image-build}
# As in the Dockerfile: no symbols in the image (22 MB -> about half).
export CARGO_PROFILE_RELEASE_STRIP=symbols
cargo build --release --locked --target "$TARGET" --bin hab-bootstrap >&2
BIN="$CARGO_TARGET_DIR/$TARGET/release/hab-bootstrap"
file -L "$BIN" >&2
file -L "$BIN" | grep -q 'statically linked\|static-pie linked' || die "$BIN is not static"
printf '   size: %s bytes\n' "$(stat -c %s "$BIN")" >&2

step "OCI image layout with umoci: $OUT/oci:$TAG"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -rf "$OUT/oci"
umoci init --layout "$OUT/oci"
umoci new --image "$OUT/oci:$TAG"
umoci unpack --image "$OUT/oci:$TAG" "$WORK/bundle" >&2
install -m 0755 "$BIN" "$WORK/bundle/rootfs/hab-bootstrap"
umoci repack --image "$OUT/oci:$TAG" "$WORK/bundle"
umoci config --image "$OUT/oci:$TAG" --os linux --architecture "$OCI_ARCH" \
  --config.user 65532:65532 --config.entrypoint /hab-bootstrap --config.cmd --help \
  --config.workingdir / \
  --config.label "org.opencontainers.image.title=hab-bootstrap" \
  --config.label "org.opencontainers.image.version=$VERSION"
umoci gc --layout "$OUT/oci"
umoci stat --image "$OUT/oci:$TAG" >&2

step "unpack the image as a runtime would, and run it chrooted as its user"
umoci unpack --image "$OUT/oci:$TAG" "$WORK/run" >&2
files=$(cd "$WORK/run/rootfs" && find . -mindepth 1 | sort)
[[ $files == "./hab-bootstrap" ]] || die "the image holds more than the binary: $files"
user=$(tr -d ' \t\n' <"$WORK/run/config.json" | sed -n 's/.*"user":{"uid":\([0-9]*\),"gid":\([0-9]*\).*/\1:\2/p')
[[ $user == 65532:65532 ]] || die "runtime user is '$user', want 65532:65532"
echo "   root filesystem: $files; runtime user $user (from the image config)" >&2
run() { chroot --userspec="$user" "$WORK/run/rootfs" /hab-bootstrap "$@"; }
version=$(run --version)
echo "   $ hab-bootstrap --version  ->  $version" >&2
[[ $version == "hab-bootstrap $VERSION" ]] || die "unexpected version output: $version"
run webhook --help | head -3 >&2
if run certs generate --out-dir /tmp/x --dns x 2>"$WORK/err"; then die "wrote into the image's root?"; fi
echo "   as expected, user $user cannot write to the image root: $(head -1 "$WORK/err")" >&2
id=$(cat "$OUT/oci/index.json")
step "done: $OUT/oci (tag $TAG); index: $id"
