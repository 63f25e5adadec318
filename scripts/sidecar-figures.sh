#!/usr/bin/env bash
# Measures the role sidecar's figures on a real control plane (scripts/control-plane.sh) and prints
# them: resident memory, CPU time per hour at the default 1 s interval, the time from a census
# change to the stored label change (median, p90), and API writes in a steady state. The
# measurement is the ignored test `figures` in tests/e2e_sidecar.rs; it asserts no figure.
#
#   scripts/sidecar-figures.sh            this crate's release build, 10 min steady window
#   scripts/sidecar-figures.sh --musl     the image's binary: the static musl release build that
#                                         scripts/image.sh leaves in target/image-build/ (or the
#                                         Dockerfile's command in target/); the test harness around
#                                         it is the debug build
#   scripts/sidecar-figures.sh --debug    the debug build
#
# HAB_SIDECAR_FIGURES_STEADY_SECS (default 600) and HAB_SIDECAR_FIGURES_TRANSITIONS (default 30)
# change the lengths; HAB_SIDECAR_BIN runs any other binary as the sidecar. Takes the window plus
# about a minute, after the build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=(--release)
case ${1:-} in
  --debug) profile=() ;;
  --musl)
    profile=()
    for bin in "$PWD"/target/{image-build/,}"$(uname -m)"-unknown-linux-musl/release/hab-bootstrap ""; do
      [[ -x $bin ]] && break
    done
    [[ -n $bin ]] || { echo "no static musl build of hab-bootstrap: run scripts/image.sh first" >&2; exit 1; }
    export HAB_SIDECAR_BIN=$bin
    ;;
  "") ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

# The build first, so the control plane does not idle through a compile.
cargo test "${profile[@]}" --locked --test e2e_sidecar --no-run
scripts/control-plane.sh build
export HAB_BOOTSTRAP_E2E_REQUIRED=1
scripts/control-plane.sh run -- \
  cargo test "${profile[@]}" --locked --test e2e_sidecar -- --ignored --exact figures --nocapture
