#!/usr/bin/env bash
# Collector-fault verdicts: does a broken OTLP collector ever hurt requests?
#
#   bench/faults.sh                  gRPC and OTLP/HTTP, all verdicts (CI runs this)
#   bench/faults.sh --protocols grpc
#
# For each protocol, four celgate processes (phoenix preset, content on, every request
# sampled, in front of an nginx origin) export to a collector that is
#   up         otlp_sink answering at once
#   down       nothing listening on the port (connection refused)
#   blackhole  otlp_sink --blackhole: accepts, reads, never answers
#   slow       otlp_sink --delay-ms 5000: every export answered after 5 s
# and each gets the same wrk load (a POST chat completion): -t2 -c32 to warm up and
# to reach --requests, and in the measured rounds -t1 -c16 on a broken-collector
# process and on the collector-up one at the same time.
#
# Verdicts, per protocol and collector state:
#   success  wrk saw no socket error and no non-2xx answer, over every run
#   p99      each round loads this state's process and the collector-up one at the
#            same time (wrk -t1 -c16 each), so whatever else the machine does then
#            hits both alike; the median over the rounds of (this p99 / the up p99
#            of the same seconds) <= 1.25. A collector that blocked requests would
#            cost seconds, not a quarter
#   memory   VmRSS after >= REQUESTS requests minus VmRSS after >= 10k requests
#            <= 8 MB: the export queue holds at most 2048 spans and is full long
#            before 10k requests when the collector is broken, so later growth can
#            only be a leak; 90k requests leaking 100 bytes each would already fail
#   spans    every span is counted on /metrics: requests - exported - dropped is
#            between 0 and 4608 (queue 2048 + the batch being built + the 4 batches
#            in flight, 512 each); with the collector down or black-holed nothing is
#            exported and spans_dropped_total > 0, with it slow drops are counted
#            (> 0); with it up nothing is dropped
# Prints a table and `faults: N passed, M failed`; exits 1 if any verdict failed.
#
# Options: --protocols grpc,http  --states up,down,blackhole,slow (up must be among
# them)  --burn N (N processes that each burn a core for the whole run, default 1:
# the export must keep up with the proxy on a busy machine, so CI tests it that
# way)  --rounds N (3)  --duration S (4)  --requests N
# (100000)  --write (put the table in BENCHMARKS.md between <!-- faults:begin --> and
# <!-- faults:end -->). BENCH_KEEP_WORK=1 keeps logs. CARGO_TARGET_DIR is honoured.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMMAND="bench/faults.sh${*:+ $*}"
PROTOCOLS=grpc,http
ROUNDS=3
DURATION=4
REQUESTS=100000
WARM_REQUESTS=10000
WRITE=0
STATE_LIST=up,down,blackhole,slow
BURN=1
while (($#)); do
    case $1 in
    --protocols) PROTOCOLS=$2; shift ;;
    --states) STATE_LIST=$2; shift ;;
    --burn) BURN=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --requests) REQUESTS=$2; shift ;;
    --write) WRITE=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
((REQUESTS > WARM_REQUESTS)) || die "--requests must be more than $WARM_REQUESTS"
RUN_START=$SECONDS
IFS=, read -ra STATES <<<"$STATE_LIST"
for state in "${STATES[@]}"; do
    case $state in up | down | blackhole | slow) ;; *) die "unknown state $state" ;; esac
done
[[ ",$STATE_LIST," == *,up,* ]] || die "--states must include up (the p99 reference)"
MAX_UNACCOUNTED=4608
MAX_GROWTH_KB=8192
P99_TOLERANCE=1.25

# burn: one process spinning on a core until the run ends (stopped by cleanup).
burn() {
    bash -c 'while :; do :; done' &
    PIDS+=("$!")
}

ensure_tools
build_release
LOAD_START=$(load_avg)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
start_origin
for ((b = 0; b < BURN; b++)); do burn; done
((BURN == 0)) || log "burning $BURN core(s) for the whole run"
ORIGIN_URL="http://127.0.0.1:$ORIGIN_PORT/v1"

declare -A ADDR ADMIN PID ERRORS REQS RSS10 RSS100 RATE CPU_T0
IFS=, read -ra PROTOS <<<"$PROTOCOLS"
for proto in "${PROTOS[@]}"; do
    case $proto in grpc | http) ;; *) die "unknown protocol $proto (grpc or http)" ;; esac
    start_sink "$proto-up"
    up_endpoint=$([ "$proto" = grpc ] && echo "$SINK_GRPC" || echo "$SINK_HTTP")
    start_sink "$proto-blackhole" --blackhole
    bh_endpoint=$([ "$proto" = grpc ] && echo "$SINK_GRPC" || echo "$SINK_HTTP")
    start_sink "$proto-slow" --delay-ms 5000
    slow_endpoint=$([ "$proto" = grpc ] && echo "$SINK_GRPC" || echo "$SINK_HTTP")
    # A port that was free a moment ago and that nothing here listens on.
    down_endpoint="127.0.0.1:$(free_port)"
    for state in "${STATES[@]}"; do
        case $state in
        up) endpoint=$up_endpoint ;;
        down) endpoint=$down_endpoint ;;
        blackhole) endpoint=$bh_endpoint ;;
        slow) endpoint=$slow_endpoint ;;
        esac
        start_celgate "$proto-$state" "$(celgate_config "$ORIGIN_URL" "$(tracing_block phoenix "http://$endpoint" "$proto")")"
        id="$proto-$state"
        ADDR[$id]=$CG_ADDR ADMIN[$id]=$CG_ADMIN PID[$id]=$CG_PID ERRORS[$id]=0
    done
done

# load ID SECONDS [THREADS CONNS]: one wrk run against ID (-t2 -c32 unless told);
# adds its errors, notes its rate.
load() {
    run_wrk "${3:-2}" "${4:-32}" "$2" "http://${ADDR[$1]}/v1/chat/completions"
    ERRORS[$1]=$((ERRORS[$1] + W_errors))
    RATE[$1]=$W_rps
    if ((W_errors)); then
        log "$1: $W_errors errors (connect $W_err_connect, read $W_err_read, write $W_err_write, timeout $W_err_timeout, non-2xx $W_err_status)"
    fi
}

# load_pair ID REF SECONDS: ID and REF loaded at the same time, -t1 -c16 each, so
# whatever else the machine does in those seconds hits both alike. Sets W_* for ID
# and P_p99, P_rps for REF.
load_pair() {
    local ref_out="$WORK/pair.out" bg
    (
        run_wrk 1 16 "$3" "http://${ADDR[$2]}/v1/chat/completions"
        echo "$W_lat_p99_us $W_rps $W_errors" >"$ref_out"
    ) &
    bg=$!
    load "$1" "$3" 1 16
    local saved_errors=$W_errors
    wait "$bg" || die "the wrk run against $2 failed"
    read -r P_p99 P_rps P_err <"$ref_out"
    ERRORS[$2]=$((ERRORS[$2] + P_err))
    W_errors=$saved_errors
}

# load_until ID N: loads ID until celgate counted at least N requests; sets LOADED
# to that count.
load_until() {
    local id=$1 n=$2 secs
    while :; do
        LOADED=$(metric "${ADMIN[$id]}" celgate_requests_total)
        if ((LOADED >= n)); then return 0; fi
        secs=$(awk -v need=$((n - LOADED)) -v r="${RATE[$id]:-6000}" 'BEGIN { s = int(need / (r > 100 ? r : 100)) + 1; print (s > 60 ? 60 : s) }')
        load "$id" "$secs"
    done
}

RESULTS="$WORK/p99"
: >"$RESULTS"
for proto in "${PROTOS[@]}"; do
    for state in "${STATES[@]}"; do
        id="$proto-$state"
        CPU_T0[$id]=$(proc_ticks "${PID[$id]}")
        load_until "$id" "$WARM_REQUESTS"
        REQS[$id]=$LOADED
        RSS10[$id]=$(status_kb "${PID[$id]}" VmRSS)
        log "$id: VmRSS ${RSS10[$id]} kB after ${REQS[$id]} requests"
    done
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((${#STATES[@]} == 1)); then
            load "$proto-up" "$DURATION"
            echo "$proto-up $r $W_lat_p99_us $W_rps" >>"$RESULTS"
            continue
        fi
        for state in "${STATES[@]}"; do
            [ "$state" = up ] && continue
            id="$proto-$state"
            load_pair "$id" "$proto-up" "$DURATION"
            echo "$id $r $W_lat_p99_us $W_rps $P_p99" >>"$RESULTS"
            echo "$proto-up $r.$state $P_p99 $P_rps" >>"$RESULTS"
            log "round $r $id: $W_rps req/s, p99 ${W_lat_p99_us}us, errors $W_errors; at the same time up: $P_rps req/s, p99 ${P_p99}us"
        done
    done
    for state in "${STATES[@]}"; do
        id="$proto-$state"
        load_until "$id" "$REQUESTS"
        REQS[$id]=$LOADED
        RSS100[$id]=$(status_kb "${PID[$id]}" VmRSS)
        log "$id: VmRSS ${RSS100[$id]} kB after ${REQS[$id]} requests"
    done
done

# --- verdicts ----------------------------------------------------------------------
# check CONDITION(awk) DETAIL: prints the table cell (run in $(...), so it only prints).
check() {
    if awk "BEGIN { exit !($1) }"; then echo pass; else echo "**FAIL** ($2)"; fi
}

# round_ratios ID: per round, ID's p99 over the p99 of the collector-up process
# loaded at the same time.
round_ratios() {
    awk -v id="$1" '$1 == id && $5 > 0 { print $3 / $5 }' "$RESULTS"
}

TABLE="$WORK/table.md"
{
    echo "## Collector faults: celgate keeps serving"
    echo
    echo "Generated by \`$COMMAND\` on $DATE; celgate commit $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)."
    echo "Machine: $(machine_line). Load average at start $LOAD_START, at end $(load_avg)."
    echo "Phoenix preset (content on), every request sampled, nginx origin, wrk on the same cores;"
    echo "$ROUNDS rounds of ${DURATION}s per collector state, then more load (\`-t2 -c32\`) until"
    echo "$REQUESTS requests.$( ((BURN == 0)) || echo " $BURN other process(es) burning a core each throughout.") p99 rule: each round loads the state and collector-up processes at once (wrk \`-t1 -c16\` each); median over the rounds of (p99 / the up p99 of the same seconds) ≤ $P99_TOLERANCE."
    echo "Memory rule: VmRSS growth from ≥ $WARM_REQUESTS to ≥ $REQUESTS requests ≤ $((MAX_GROWTH_KB / 1024)) MB."
    echo "Spans rule: requests − exported − dropped in 0..$MAX_UNACCOUNTED (queue + the batch being built + 4 batches in flight)."
    echo
    echo "| protocol | collector | requests | errors | req/s (median) | p99 (median) | p99 vs up (median round ratio) | VmRSS @10k → @end | CPU/req | spans exported | dropped | unaccounted | success | p99 | memory | spans |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|"
    for proto in "${PROTOS[@]}"; do
        up_p99=$(awk -v id="$proto-up" '$1 == id { print $3 }' "$RESULTS" | median)
        for state in "${STATES[@]}"; do
            id="$proto-$state"
            p99=$(awk -v id="$id" '$1 == id { print $3 }' "$RESULTS" | median)
            rps=$(awk -v id="$id" '$1 == id { print $4 }' "$RESULTS" | median)
            requests=$(metric "${ADMIN[$id]}" celgate_requests_total)
            exported=$(metric "${ADMIN[$id]}" celgate_spans_exported_total)
            dropped=$(metric "${ADMIN[$id]}" celgate_spans_dropped_total)
            unaccounted=$((requests - exported - dropped))
            growth=$((RSS100[$id] - RSS10[$id]))
            cpu=$(awk -v t=$(($(proc_ticks "${PID[$id]}") - CPU_T0[$id])) -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.0f", n ? t * 1e6 / hz / n : 0 }')
            v_success=$(check "${ERRORS[$id]} == 0" "${ERRORS[$id]} failed requests")
            if [ "$state" = up ]; then
                v_p99="(reference)"
                vs_up="—"
            else
                ratio=$(round_ratios "$id" | median)
                v_p99=$(check "$ratio <= $P99_TOLERANCE" "p99 $p99 µs vs $up_p99 µs with the collector up; median round ratio $ratio")
                vs_up=$(awk -v a="$ratio" 'BEGIN { printf "%+.0f%%", 100 * (a - 1) }')
            fi
            v_mem=$(check "$growth <= $MAX_GROWTH_KB" "VmRSS grew $growth kB")
            case $state in
            up) cond="$dropped == 0 && $unaccounted >= 0 && $unaccounted <= $MAX_UNACCOUNTED" ;;
            down | blackhole) cond="$exported == 0 && $dropped > 0 && $unaccounted >= 0 && $unaccounted <= $MAX_UNACCOUNTED" ;;
            slow) cond="$dropped > 0 && $unaccounted >= 0 && $unaccounted <= $MAX_UNACCOUNTED" ;;
            esac
            v_spans=$(check "$cond" "requests $requests, exported $exported, dropped $dropped")
            printf '| %s | %s | %d | %d | %.0f | %s µs | %s | %s → %s MB (%+.1f) | %s µs | %d | %d | %d | %s | %s | %s | %s |\n' \
                "$proto" "$state" "$requests" "${ERRORS[$id]}" "$rps" "$p99" "$vs_up" \
                "$(awk -v k="${RSS10[$id]}" 'BEGIN { printf "%.1f", k / 1024 }')" \
                "$(awk -v k="${RSS100[$id]}" 'BEGIN { printf "%.1f", k / 1024 }')" \
                "$(awk -v k="$growth" 'BEGIN { printf "%.1f", k / 1024 }')" \
                "$cpu" "$exported" "$dropped" "$unaccounted" "$v_success" "$v_p99" "$v_mem" "$v_spans"
        done
    done
    echo
    echo "Took $((SECONDS - RUN_START))s including the release build (${BUILD_SECONDS}s)."
} >"$TABLE"
PASSED=$( (grep -o '| pass ' "$TABLE" || true) | wc -l)
FAILED=$( (grep -o '| \*\*FAIL\*\*' "$TABLE" || true) | wc -l)

cat "$TABLE"
if ((WRITE)); then
    replace_section "$REPO_DIR/BENCHMARKS.md" '<!-- faults:begin -->' '<!-- faults:end -->' "$TABLE"
    log "wrote the faults section of BENCHMARKS.md"
fi
echo
echo "faults: $PASSED passed, $FAILED failed"
if ((FAILED)); then exit 1; fi
