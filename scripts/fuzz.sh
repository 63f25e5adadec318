#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo fuzz: libFuzzer with AddressSanitizer, nightly Rust).
#
#   scripts/fuzz.sh                      every target for 60 s
#   scripts/fuzz.sh --seconds 600 review one target for 10 minutes
#   scripts/fuzz.sh --install            only install the nightly toolchain and cargo-fuzz
#
# Targets: review (AdmissionReview decoding + both webhooks' mutation; the patch must apply),
# inject_manifest (`hab-bootstrap inject`'s manifest parser and renderer), census (the Supervisor
# census parser and role decision). The checks are in fuzz/checks.rs; tests/hostile.rs replays
# the seeds (fuzz/seeds/<target>) and every past failure (fuzz/regressions/<target>) on stable.
# The growing corpus is kept out of the repository, in fuzz/corpus/<target>.
#
# Prints one summary line per target (executions, exec/s); exits non-zero on any failure, leaving
# the input in fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/ with the fix.
# cargo-fuzz is installed once under ~/.cache/hab-bootstrap/tools (HAB_TOOLS_CACHE).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TOOLS=${HAB_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hab-bootstrap/tools}
CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(review inject_manifest census)

seconds=60
install_only=false
targets=()
while [[ $# -gt 0 ]]; do
  case $1 in
  --seconds) seconds=$2; shift 2 ;;
  --install) install_only=true; shift ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
  *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")

log() { printf '[fuzz %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
export PATH="$TOOLS/bin:$PATH"
if ! cargo +nightly fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS (a few minutes, once)"
  cargo +nightly install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS"
fi
$install_only && exit 0

log "building ${targets[*]} (release, AddressSanitizer, debug assertions)"
for t in "${targets[@]}"; do
  cargo +nightly fuzz build -O --debug-assertions "$t" >&2
done

failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log "$t: ${seconds}s"
  out=$(mktemp)
  # -rss_limit_mb: a leak or a runaway allocation is a failure too; -max_len: reviews are kB-sized,
  # 64 kB leaves room for deep nesting and long names.
  if cargo +nightly fuzz run -O --debug-assertions "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"$out" 2>&1; then
    status=ok
  else
    status=FAILED
    failed=1
    tail -n 40 "$out" >&2
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -1)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  printf '%-16s %-6s executions=%s exec/s=%s seconds=%s corpus=%s\n' "$t" "$status" "${execs:-?}" "${rate:-?}" "$seconds" "$corpus"
  rm -f "$out"
done
exit "$failed"
