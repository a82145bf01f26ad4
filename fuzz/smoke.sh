#!/usr/bin/env bash
# Build the fuzz targets and run each for a short while on the checked-in seeds.
# Exits non-zero if a target crashes (panic, stack overflow, timeout, OOM).
# Usage: fuzz/smoke.sh [seconds-per-target]   (default 20)
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP lets it use the
# nightly-only sanitizer flags on a stable toolchain.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
export RUSTC_BOOTSTRAP=1

cargo fuzz build
for target in config_parse expr_eval sse_stream request_parse anthropic_stream responses_stream gemini_stream; do
    # A scratch corpus: libFuzzer writes new inputs into its first corpus dir, and
    # the seeds (and regressions) stay untouched as read-only extra dirs.
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    dirs=("$work" "seeds/$target")
    [ -d "regressions/$target" ] && dirs+=("regressions/$target")
    echo "== $target: ${secs}s"
    cargo fuzz run "$target" "${dirs[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -timeout=25 -print_final_stats=1
    rm -rf "$work"
done
echo "smoke: no crashes"
