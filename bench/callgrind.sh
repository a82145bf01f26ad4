#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a figure that does not
# move with the machine's load, to judge a change to the per-request path by.
#
#   bench/callgrind.sh                 2000 chat calls per configuration, writes BENCHMARKS.md
#   bench/callgrind.sh --requests 200  shorter; --no-write prints only
#
# Options: --requests N (counted calls), --warmup N (calls in both runs of a pair),
# --write / --no-write (BENCHMARKS.md section between <!-- callgrind:begin --> and
# <!-- callgrind:end -->; default: write). BENCH_KEEP_WORK=1 keeps the callgrind files.
#
# The release celgate runs under `valgrind --tool=callgrind` against the nginx origin
# of bench/run.sh (a fixed chat completion), in two configurations:
#   off      tracing off (no exporter, randomSampling: false)
#   phoenix  the phoenix preset (content on), exporting OTLP/gRPC to a live sink
# For each, two runs: one serving WARMUP calls, one serving WARMUP + N; the client
# (gateway/examples/ttfb, one call at a time on a kept-alive connection, not under
# valgrind) sends the 2-message chat of bench/chat.lua. The difference of the two
# runs' totals divided by N is the instruction count of one call: start-up, config
# compile, the first calls' warm-up and shutdown are in both runs and cancel; the
# spans' export (encoding on the request thread, batches on the export thread) and
# shutdown's final flush are in the difference. Only celgate's user-space
# instructions count (not the kernel's, not nginx's or the sink's).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMMAND="bench/callgrind.sh${*:+ $*}"
N=2000
WARMUP=200
WRITE=1
while (($#)); do
    case $1 in
    --requests) N=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --write) WRITE=1 ;;
    --no-write) WRITE=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
((N > 0 && WARMUP > 0)) || die "--requests and --warmup must be positive"
command -v valgrind >/dev/null || die "valgrind is not installed (apt-get install -y valgrind)"

ensure_tools
build_release
LOAD_START=$(load_avg)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')

start_origin
start_sink callgrind
ORIGIN_URL="http://127.0.0.1:$ORIGIN_PORT/v1"
printf '%s' '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"What is the capital of France? Answer in one short sentence."}],"temperature":0.2,"max_tokens":64}' >"$WORK/chat.json"

# count NAME CONFIG CALLS: celgate under callgrind serving CALLS calls, then SIGTERM.
# Sets TOTAL to the run's instruction count (a variable, not a subshell's output, so
# that the process is in this shell's PIDS and stopped on any failure).
count() {
    local name=$1 calls=$3 dir="$WORK/cg-$1-$3" pid addr admin served
    mkdir -p "$dir"
    printf '%s\n' "$2" >"$dir/config.yaml"
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
        "$CELGATE" run --config "$dir/config.yaml" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    pid=$!
    PIDS+=("$pid")
    wait_for_line "$dir/stderr.log" 'admin listening on ' "$pid" 300 >/dev/null ||
        die "celgate ($name) under valgrind did not start: $(tail -20 "$dir/stderr.log")"
    addr=$(listening_addr "$dir/stderr.log" proxy)
    admin=$(listening_addr "$dir/stderr.log" admin)
    "$TTFB" --body "$WORK/chat.json" --warmup 0 --n "$calls" --timeout-ms 60000 \
        "http://$addr/v1/chat/completions" >"$dir/client.txt" ||
        die "the client failed against celgate ($name): $(cat "$dir/client.txt")"
    served=$(metric "$admin" celgate_requests_total)
    ((served == calls)) || die "celgate ($name) counted $served requests, $calls were sent"
    kill -TERM "$pid"
    local deadline=$((SECONDS + 300))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && die "celgate ($name) under valgrind did not exit within 300 s of SIGTERM"
    wait "$pid" || die "celgate ($name) exited with an error: $(tail -20 "$dir/stderr.log")"
    TOTAL=$(awk '$1 == "summary:" || $1 == "totals:" { print $2; exit }' "$dir/callgrind.out")
    [ -n "$TOTAL" ] || die "no instruction total in $dir/callgrind.out"
    log "callgrind $name, $calls calls: $TOTAL instructions"
}

declare -A CONFIG PER_CALL LABEL
CONFIG[off]=$(celgate_config "$ORIGIN_URL")
CONFIG[phoenix]=$(celgate_config "$ORIGIN_URL" "$(tracing_block phoenix "http://$SINK_GRPC" grpc)")
LABEL[off]="celgate, tracing off"
LABEL[phoenix]="celgate, phoenix preset (content), OTLP/gRPC to a sink"
declare -A LOW HIGH
for name in off phoenix; do
    count "$name" "${CONFIG[$name]}" "$WARMUP"
    LOW[$name]=$TOTAL
    count "$name" "${CONFIG[$name]}" $((WARMUP + N))
    HIGH[$name]=$TOTAL
    PER_CALL[$name]=$(((HIGH[$name] - LOW[$name]) / N))
done
SPANS=$(sink_stat "$SINK_STATS" spans)
LOAD_END=$(load_avg)

# self_costs NAME CALLS: "instructions<TAB>function" per function of a run, from
# callgrind_annotate (self cost; source file and object dropped).
self_costs() {
    callgrind_annotate --inclusive=no --threshold=100 --auto=no "$WORK/cg-$1-$2/callgrind.out" 2>/dev/null |
        awk '$1 ~ /^[0-9][0-9,]*$/ && $2 ~ /^\(/ && $0 !~ /PROGRAM TOTALS/ {
            n = $1; gsub(",", "", n); $1 = ""; $2 = ""; f = $0
            sub(/^ +/, "", f); sub(/ \[[^]]*\]$/, "", f); sub(/^[^:]*:/, "", f)
            print n "\t" f }'
}
# The per-call hot path: functions by their own instructions per call in the phoenix
# pair (the difference of the two runs, like the totals).
TOP="$WORK/top.txt"
awk -F'\t' -v n="$N" -v per="${PER_CALL[phoenix]}" '
    FNR == NR { low[$2] += $1; next } { high[$2] += $1 }
    END { for (f in high) { d = (high[f] - low[f]) / n; if (d >= 1) printf "%d\t%.1f%%\t%s\n", d, 100 * d / per, f } }' \
    <(self_costs phoenix "$WARMUP") <(self_costs phoenix $((WARMUP + N))) | sort -t$'\t' -k1,1nr | head -15 >"$TOP" || true

fmt() { printf '%s' "$1" | sed ':a; s/\B[0-9]\{3\}\>/,&/; ta'; }
COMMIT=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO_DIR" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ", uncommitted changes" || true)
SECTION="$WORK/section.md"
{
    echo "## Instructions per request (callgrind)"
    echo
    echo "Generated by \`$COMMAND\` on $DATE, celgate commit $COMMIT$DIRTY, $(valgrind --version)."
    echo "Machine: $(machine_line). Load average at start $LOAD_START, at end $LOAD_END (instruction"
    echo "counts do not depend on it; wall-clock figures do)."
    echo
    echo "celgate (release) under \`valgrind --tool=callgrind\`, serving the 2-message chat of"
    echo "bench/chat.lua from the nginx origin, one call at a time; instructions of one call ="
    echo "(total of a run of $WARMUP + $N calls − total of a run of $WARMUP calls) / $N, so start-up,"
    echo "compile and shutdown cancel. User-space instructions of celgate only, all its threads."
    echo
    echo "| configuration | instructions, $WARMUP calls | instructions, $((WARMUP + N)) calls | per call |"
    echo "|---|---:|---:|---:|"
    for name in off phoenix; do
        echo "| ${LABEL[$name]} | $(fmt "${LOW[$name]}") | $(fmt "${HIGH[$name]}") | $(fmt "${PER_CALL[$name]}") |"
    done
    echo
    echo "Tracing and export add $(fmt $((PER_CALL[phoenix] - PER_CALL[off]))) instructions per call"
    echo "($(awk -v a="${PER_CALL[phoenix]}" -v b="${PER_CALL[off]}" 'BEGIN { printf "%.2f", b ? a / b : 0 }')× tracing off). The sink received $SPANS spans."
    if [ -s "$TOP" ]; then
        echo
        echo "Where a phoenix call's instructions go: the functions with the most instructions of"
        echo "their own per call (\`callgrind_annotate --inclusive=no\`, the pair's difference / $N):"
        echo
        echo "| per call | share | function |"
        echo "|---:|---:|---|"
        awk -F'\t' '
            function th(n, s, r) { s = sprintf("%d", n); while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) } return s r }
            { f = $3; gsub(/\|/, "\\|", f); printf "| %s | %s | `%s` |\n", th($1), $2, f }' "$TOP"
    fi
} >"$SECTION"

cat "$SECTION"
if [ "$WRITE" = 1 ]; then
    replace_section "$REPO_DIR/BENCHMARKS.md" '<!-- callgrind:begin -->' '<!-- callgrind:end -->' "$SECTION"
    log "wrote the callgrind section of BENCHMARKS.md"
fi
