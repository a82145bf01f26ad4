#!/usr/bin/env bash
# Load harness: celgate against nginx on this machine, with wrk (saturation) and the
# rate example (fixed rates, open loop).
#
#   bench/run.sh                  full run (about 22 minutes after the build), writes BENCHMARKS.md
#   bench/run.sh --quick          short runs, one round (CI smoke); prints only
#   bench/run.sh --with-litellm   also LiteLLM's proxy (bench/litellm.sh; virtualenv in bench/.venv)
#
# Options: --rounds N, --duration S (concurrency-32 runs), --c1-duration S,
# --rate-duration S (each fixed-rate run, after 1 s of warm-up),
# --write / --no-write (BENCHMARKS.md section between <!-- load:begin --> and
# <!-- load:end -->; default: write unless --quick). BENCH_KEEP_WORK=1 keeps the
# temp dir (configs, logs). CARGO_TARGET_DIR is honoured.
#
# Configurations, measured in rounds (a b c d e f0 f1 [L], then again) so machine
# noise hits them alike; the table shows medians over the rounds:
#   a  wrk -> nginx origin (a fixed chat completion, `return 200`)
#   b  wrk -> nginx reverse proxy (keepalive upstream) -> a
#   h  wrk -> bare hyper proxy (gateway/examples/bare_proxy.rs: celgate's stack,
#         tokio + hyper server + hyper-util client + mimalloc, doing nothing else) -> a
#   c  wrk -> celgate, tracing off (no exporter, randomSampling: false) -> a
#   d  wrk -> celgate, jaeger preset, OTLP/gRPC to a live sink -> a
#   e  wrk -> celgate, phoenix preset (content on), OTLP/gRPC to a live sink -> a
#   f0 wrk -> scripted SSE upstream (`celgate upstream`), streamed chat
#   f1 wrk -> celgate (phoenix, exporting) -> f0
#   L  wrk -> LiteLLM proxy (otel callback to a live sink) -> a   (--with-litellm)
#   b1k e1k b16k e16k   b and e with 1 KiB and 16 KiB chat request bodies
#   m0-m3 r0-r3 g0-g3   a row pair per other protocol (see below)
# and, in the same rounds, fixed-rate runs (gateway/examples/rate.rs) of a, b, c and e
# at 1k and 5k req/s (p50/p99 from the intended send time, added vs a), and of f0/f1
# streams at a fixed rate (time to first token, gaps between chunks, added vs f0).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMMAND="bench/run.sh${*:+ $*}"
QUICK=0
WITH_LITELLM=0
WRITE=""
ROUNDS=""
D32=""
D1=""
DR=""
while (($#)); do
    case $1 in
    --quick) QUICK=1 ;;
    --with-litellm) WITH_LITELLM=1 ;;
    --write) WRITE=1 ;;
    --no-write) WRITE=0 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) D32=$2; shift ;;
    --c1-duration) D1=$2; shift ;;
    --rate-duration) DR=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
if ((QUICK)); then
    : "${ROUNDS:=1}" "${D32:=2}" "${D1:=1}" "${DR:=1}" "${WRITE:=0}"
    TTFB_N=40
else
    : "${ROUNDS:=3}" "${D32:=8}" "${D1:=4}" "${DR:=5}" "${WRITE:=1}"
    TTFB_N=300
fi
# LiteLLM answers ~100 req/s: shorter runs are enough.
D32_SLOW=$(((D32 + 1) / 2))
D1_SLOW=$(((D1 + 1) / 2))
RUN_START=$SECONDS

ensure_tools
build_release
LOAD_START=$(load_avg)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')

# --- processes ---------------------------------------------------------------------
start_origin
start_nginx proxy \
    'client_body_buffer_size 64k; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }' \
    "upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }"
PROXY_PORT=$NGINX_PORT
PROXY_PID=$NGINX_PID
start_bare "127.0.0.1:$ORIGIN_PORT"
start_upstream
start_sink jaeger
JAEGER_SINK=$SINK_GRPC JAEGER_SINK_STATS=$SINK_STATS JAEGER_SINK_PID=$SINK_PID
start_sink phoenix
PHOENIX_SINK=$SINK_GRPC PHOENIX_SINK_STATS=$SINK_STATS PHOENIX_SINK_PID=$SINK_PID
start_sink stream
STREAM_SINK=$SINK_GRPC STREAM_SINK_STATS=$SINK_STATS STREAM_SINK_PID=$SINK_PID

ORIGIN_URL="http://127.0.0.1:$ORIGIN_PORT/v1"
start_celgate off "$(celgate_config "$ORIGIN_URL")"
OFF_ADDR=$CG_ADDR OFF_PID=$CG_PID OFF_ADMIN=$CG_ADMIN
start_celgate jaeger "$(celgate_config "$ORIGIN_URL" "$(tracing_block jaeger "http://$JAEGER_SINK" grpc)")"
JAEGER_ADDR=$CG_ADDR JAEGER_PID=$CG_PID JAEGER_ADMIN=$CG_ADMIN
start_celgate phoenix "$(celgate_config "$ORIGIN_URL" "$(tracing_block phoenix "http://$PHOENIX_SINK" grpc)")"
PHOENIX_ADDR=$CG_ADDR PHOENIX_PID=$CG_PID PHOENIX_ADMIN=$CG_ADMIN
# The same for the 1 KiB and the 16 KiB request rows, a process each, so that the
# memory larger spans take (and the allocator keeps) is counted in no other row's
# peak RSS.
declare -A SIZE_ADDR SIZE_PID SIZE_ADMIN SIZE_SINK_STATS SIZE_SINK_PID
for size in 1k 16k; do
    start_sink "phoenix-$size"
    SIZE_SINK_STATS[$size]=$SINK_STATS SIZE_SINK_PID[$size]=$SINK_PID
    start_celgate "phoenix-$size" "$(celgate_config "$ORIGIN_URL" "$(tracing_block phoenix "http://$SINK_GRPC" grpc)")"
    SIZE_ADDR[$size]=$CG_ADDR SIZE_PID[$size]=$CG_PID SIZE_ADMIN[$size]=$CG_ADMIN
done
start_celgate stream "$(celgate_config "http://$UP_ADDR/v1" "$(tracing_block phoenix "http://$STREAM_SINK" grpc)")"
STREAM_ADDR=$CG_ADDR STREAM_PID=$CG_PID STREAM_ADMIN=$CG_ADMIN
# One gateway for the other protocols: a backend per provider, all the scripted upstream.
start_sink protocols
PROTO_SINK=$SINK_GRPC PROTO_SINK_STATS=$SINK_STATS PROTO_SINK_PID=$SINK_PID
start_celgate protocols "$(protocols_config "http://$UP_ADDR" "$(tracing_block phoenix "http://$PROTO_SINK" grpc)")"
PROTO_ADDR=$CG_ADDR PROTO_PID=$CG_PID PROTO_ADMIN=$CG_ADMIN

if ((WITH_LITELLM)); then
    # shellcheck source=bench/litellm.sh
    source "$BENCH_DIR/litellm.sh"
    start_sink litellm
    LITELLM_SINK=$SINK_GRPC LITELLM_SINK_STATS=$SINK_STATS LITELLM_SINK_PID=$SINK_PID
    start_litellm "$ORIGIN_URL" "http://$LITELLM_SINK"
fi

# --- what to measure ---------------------------------------------------------------
PATH_CHAT=/v1/chat/completions
declare -A LABEL URL ARGS CPU_PIDS SLOW
ORDER=(a b h c d e b1k e1k b16k e16k f0 f1)
LABEL[a]="direct to nginx (fixed chat completion)"
URL[a]="http://127.0.0.1:$ORIGIN_PORT$PATH_CHAT"
CPU_PIDS[a]="$ORIGIN_PID $(children_of "$ORIGIN_PID")"
LABEL[b]="nginx reverse proxy -> a"
URL[b]="http://127.0.0.1:$PROXY_PORT$PATH_CHAT"
CPU_PIDS[b]="$PROXY_PID $(children_of "$PROXY_PID")"
LABEL[h]="bare hyper proxy (celgate's stack, no celgate) -> a"
URL[h]="http://$BARE_ADDR$PATH_CHAT"
CPU_PIDS[h]=$BARE_PID
LABEL[c]="celgate, tracing off -> a"
URL[c]="http://$OFF_ADDR$PATH_CHAT"
CPU_PIDS[c]=$OFF_PID
LABEL[d]="celgate, jaeger preset, OTLP/gRPC -> a"
URL[d]="http://$JAEGER_ADDR$PATH_CHAT"
CPU_PIDS[d]=$JAEGER_PID
LABEL[e]="celgate, phoenix preset (content), OTLP/gRPC -> a"
URL[e]="http://$PHOENIX_ADDR$PATH_CHAT"
CPU_PIDS[e]=$PHOENIX_PID
LABEL[f0]="stream: direct to scripted SSE upstream"
URL[f0]="http://$UP_ADDR$PATH_CHAT"
ARGS[f0]=stream
CPU_PIDS[f0]=$UP_PID
LABEL[f1]="stream: celgate (phoenix, OTLP/gRPC) -> f0"
URL[f1]="http://$STREAM_ADDR$PATH_CHAT"
ARGS[f1]=stream
CPU_PIDS[f1]=$STREAM_PID
# Larger requests, a conversation resent with its history: nginx proxy (its body
# buffer raised to 64k so a 16 KiB body stays in memory, as celgate's does) and
# celgate phoenix, which records every message in the span.
declare -A SIZE_OF
for size in 1k 16k; do
    write_chat_body "$WORK/chat-$size.json" $((${size%k} * 1024))
    LABEL[b$size]="nginx reverse proxy -> a, $size request"
    URL[b$size]=${URL[b]}
    CPU_PIDS[b$size]=${CPU_PIDS[b]}
    LABEL[e$size]="celgate, phoenix preset, OTLP/gRPC -> a, $size request"
    URL[e$size]="http://${SIZE_ADDR[$size]}$PATH_CHAT"
    CPU_PIDS[e$size]=${SIZE_PID[$size]}
    ARGS[b$size]="body=$WORK/chat-$size.json" ARGS[e$size]="body=$WORK/chat-$size.json"
    SIZE_OF[b$size]=$size SIZE_OF[e$size]=$size
done
# A row pair per protocol and shape: direct to the scripted upstream (x0, x2) and
# through celgate with the phoenix preset (x1, x3); JSON (x0, x1) and stream (x2, x3).
write_protocol_bodies "$WORK"
declare -A DIRECT_OF PROTO_PATH
PROTO_PATH[m]=/v1/messages PROTO_PATH[r]=/v1/responses
PROTO_PATH[g]=/v1beta/models/gemini-2.5-flash:generateContent
declare -A PROTO_NAME=([m]="Anthropic Messages" [r]="OpenAI Responses" [g]="Gemini generateContent")
for p in m r g; do
    for shape in json stream; do
        if [ "$shape" = json ]; then d=${p}0 c=${p}1; else d=${p}2 c=${p}3; fi
        path=${PROTO_PATH[$p]}
        if [ "$p$shape" = gstream ]; then path="/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"; fi
        ORDER+=("$d" "$c")
        LABEL[$d]="${PROTO_NAME[$p]} $shape: direct to the scripted upstream"
        URL[$d]="http://$UP_ADDR$path"
        CPU_PIDS[$d]=$UP_PID
        LABEL[$c]="${PROTO_NAME[$p]} $shape: celgate (phoenix, OTLP/gRPC) -> $d"
        URL[$c]="http://$PROTO_ADDR$path"
        CPU_PIDS[$c]=$PROTO_PID
        ARGS[$d]="body=$WORK/$p-$shape.json" ARGS[$c]="body=$WORK/$p-$shape.json"
        DIRECT_OF[$d]=$d DIRECT_OF[$c]=$d
    done
done
if ((WITH_LITELLM)); then
    ORDER+=(L)
    LABEL[L]="LiteLLM $LITELLM_VERSION proxy, otel callback (OTLP/gRPC) -> a"
    URL[L]="http://$LITELLM_ADDR$PATH_CHAT"
    CPU_PIDS[L]="$LITELLM_PID $(children_of "$LITELLM_PID")"
    SLOW[L]=1
fi

# The request bodies of the fixed-rate runs: chat.lua's 2-message chat, the same as a
# stream, and a stream the upstream paces (5 ms before each event).
STREAM_BODY='{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"What is the capital of France? Answer in one short sentence."}],"temperature":0.2,"max_tokens":64}'
printf '%s' "$STREAM_BODY" >"$WORK/stream.json"
sed 's/"gpt-4o-mini"/"drip-5"/' "$WORK/stream.json" >"$WORK/drip.json"
sed 's/"stream":true,"stream_options":{"include_usage":true},//' "$WORK/stream.json" >"$WORK/chat.json"
RATES=(1000 5000)
RATE_ROWS=(a b c e)
declare -A SRATE=([stream]=500 [drip]=100) SBODY=([stream]="$WORK/stream.json" [drip]="$WORK/drip.json")
RATE_WARMUP=1

RESULTS="$WORK/results" RATE_RESULTS="$WORK/rate-results" STREAM_RESULTS="$WORK/stream-results"
: >"$RESULTS"
: >"$RATE_RESULTS"
: >"$STREAM_RESULTS"

# cpu_per_req TICKS REQUESTS: µs of CPU per request.
cpu_per_req() {
    awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }'
}

# measure KEY ROUND: one concurrency-32 run (throughput, latency, CPU, peak RSS) and
# one concurrency-1 run (latency).
measure() {
    local k=$1 r=$2 d32=$D32 d1=$D1 t0 t1 cpu rps p50 p99 e32 peak
    if [ -n "${SLOW[$k]:-}" ]; then d32=$D32_SLOW d1=$D1_SLOW; fi
    reset_peak ${CPU_PIDS[$k]}
    t0=$(proc_ticks ${CPU_PIDS[$k]})
    run_wrk 2 32 "$d32" "${URL[$k]}" ${ARGS[$k]:-}
    t1=$(proc_ticks ${CPU_PIDS[$k]})
    peak=$(peak_kb ${CPU_PIDS[$k]})
    cpu=$(cpu_per_req $((t1 - t0)) "$W_requests")
    rps=$W_rps p50=$W_lat_p50_us p99=$W_lat_p99_us e32=$W_errors
    run_wrk 1 1 "$d1" "${URL[$k]}" ${ARGS[$k]:-}
    echo "$k $r $rps $p50 $p99 $W_lat_p50_us $cpu $((e32 + W_errors)) $peak" >>"$RESULTS"
    log "round $r $k: $rps req/s, p50 ${p50}us p99 ${p99}us, c1 p50 ${W_lat_p50_us}us, ${cpu}us CPU/req, peak ${peak} kB, errors $((e32 + W_errors))"
}

# measure_rate KEY RATE ROUND: a fixed-rate run of the 2-message chat (CPU counted
# over the warm-up too, so divided by every request sent).
measure_rate() {
    local k=$1 rate=$2 r=$3 t0 t1 cpu peak
    reset_peak ${CPU_PIDS[$k]}
    t0=$(proc_ticks ${CPU_PIDS[$k]})
    run_rate "$rate" "$DR" "${URL[$k]}" "$WORK/chat.json"
    t1=$(proc_ticks ${CPU_PIDS[$k]})
    peak=$(peak_kb ${CPU_PIDS[$k]})
    cpu=$(cpu_per_req $((t1 - t0)) $((rate * (RATE_WARMUP + DR))))
    echo "$k $rate $r $R_p50_us $R_p99_us $cpu $peak $R_errors $R_lag_p99_us $R_p999_us" >>"$RATE_RESULTS"
    log "round $r $k @ $rate/s: p50 ${R_p50_us}us p99 ${R_p99_us}us p99.9 ${R_p999_us}us (service p50 ${R_service_p50_us}us, send lag p99 ${R_lag_p99_us}us), ${cpu}us CPU/req, peak ${peak} kB, errors $R_errors"
}

# measure_stream KEY SHAPE ROUND: a fixed-rate run of streams, each chunk timed.
measure_stream() {
    local k=$1 shape=$2 r=$3 t0 t1 cpu
    t0=$(proc_ticks ${CPU_PIDS[$k]})
    run_rate "${SRATE[$shape]}" "$DR" "${URL[$k]}" "${SBODY[$shape]}" --stream
    t1=$(proc_ticks ${CPU_PIDS[$k]})
    cpu=$(cpu_per_req $((t1 - t0)) $((SRATE[$shape] * (RATE_WARMUP + DR))))
    echo "$k $shape $r $R_ttft_p50_us $R_ttft_p99_us $R_gap_mean_us $R_gap_p99_us $R_p99_us $R_errors $cpu" >>"$STREAM_RESULTS"
    log "round $r $k $shape @ ${SRATE[$shape]}/s: TTFT p50 ${R_ttft_p50_us}us p99 ${R_ttft_p99_us}us, gap mean ${R_gap_mean_us}us p99 ${R_gap_p99_us}us, ${cpu}us CPU/req, errors $R_errors"
}

# Warm-up (connection pools, allocator, caches), and a check that every target answers.
log "warm-up"
for k in "${ORDER[@]}"; do
    run_wrk 2 32 "$([ -n "${SLOW[$k]:-}" ] && echo 3 || echo 2)" "${URL[$k]}" ${ARGS[$k]:-}
    ((W_requests > 0 && W_errors == 0)) ||
        die "warm-up of $k (${LABEL[$k]}) failed: $W_requests requests, $W_errors errors (non-2xx: $W_err_status)"
done

for ((r = 1; r <= ROUNDS; r++)); do
    for k in "${ORDER[@]}"; do
        measure "$k" "$r"
    done
    for rate in "${RATES[@]}"; do
        for k in "${RATE_ROWS[@]}"; do
            measure_rate "$k" "$rate" "$r"
        done
    done
    for shape in stream drip; do
        for k in f0 f1; do
            measure_stream "$k" "$shape" "$r"
        done
    done
done

# --- after the load ----------------------------------------------------------------
col() { awk -v k="$1" -v c="$2" '$1 == k { print $c }' "$RESULTS" | median; }
declare -A RPS P50 P99 C1 CPU ERR
for k in "${ORDER[@]}"; do
    RPS[$k]=$(col "$k" 3)
    P50[$k]=$(col "$k" 4)
    P99[$k]=$(col "$k" 5)
    C1[$k]=$(col "$k" 6)
    CPU[$k]=$(col "$k" 7)
    ERR[$k]=$(awk -v k="$k" '$1 == k { s += $8 } END { print s + 0 }' "$RESULTS")
done
# Peak RSS of a row: the largest of its rounds' peaks.
colmax() { awk -v k="$1" -v c="$2" '$1 == k && $c > m { m = $c } END { print m + 0 }' "$3"; }
declare -A HWM
for k in "${ORDER[@]}"; do HWM[$k]=$(colmax "$k" 9 "$RESULTS"); done

# Time to first byte of a stream, direct and through celgate, requests alternating.
log "time to first byte ($TTFB_N requests each, alternating)"
"$TTFB" --body "$WORK/stream.json" --n "$TTFB_N" "${URL[f0]}" "${URL[f1]}" >"$WORK/ttfb.txt" ||
    die "ttfb failed: $(cat "$WORK/ttfb.txt")"
"$TTFB" --body "$WORK/drip.json" --n $((TTFB_N / 10 + 5)) --warmup 3 "${URL[f0]}" "${URL[f1]}" >"$WORK/ttfb-drip.txt" ||
    die "ttfb (drip) failed: $(cat "$WORK/ttfb-drip.txt")"
declare -A PTTFB_D PTTFB_C
for p in m r g; do
    "$TTFB" --body "$WORK/$p-stream.json" --n "$TTFB_N" "${URL[${p}2]}" "${URL[${p}3]}" >"$WORK/ttfb-$p.txt" ||
        die "ttfb ($p) failed: $(cat "$WORK/ttfb-$p.txt")"
done
ttfb_field() { # FILE LINE_NO FIELD
    sed -n "${2}p" "$1" | tr ' ' '\n' | awk -F= -v f="$3" '$1 == f { print $2 }'
}
TTFB_DIRECT=$(ttfb_field "$WORK/ttfb.txt" 1 first_byte_p50_us)
TTFB_CELGATE=$(ttfb_field "$WORK/ttfb.txt" 2 first_byte_p50_us)
TTFB_DIRECT_P90=$(ttfb_field "$WORK/ttfb.txt" 1 first_byte_p90_us)
TTFB_CELGATE_P90=$(ttfb_field "$WORK/ttfb.txt" 2 first_byte_p90_us)
DRIP_DIRECT=$(ttfb_field "$WORK/ttfb-drip.txt" 1 first_byte_p50_us)
DRIP_CELGATE=$(ttfb_field "$WORK/ttfb-drip.txt" 2 first_byte_p50_us)
DRIP_TOTAL_DIRECT=$(ttfb_field "$WORK/ttfb-drip.txt" 1 total_p50_us)
DRIP_TOTAL_CELGATE=$(ttfb_field "$WORK/ttfb-drip.txt" 2 total_p50_us)
for p in m r g; do
    PTTFB_D[$p]=$(ttfb_field "$WORK/ttfb-$p.txt" 1 first_byte_p50_us)
    PTTFB_C[$p]=$(ttfb_field "$WORK/ttfb-$p.txt" 2 first_byte_p50_us)
done

# Spans: what celgate says it exported/dropped, and what the sinks received, once
# every span is accounted for (the exporter's batch timer fires every 5 s).
settle_spans() { # ADMIN
    local deadline=$((SECONDS + 20)) requests done_
    while ((SECONDS < deadline)); do
        requests=$(metric "$1" celgate_requests_total)
        done_=$(($(metric "$1" celgate_spans_exported_total) + $(metric "$1" celgate_spans_dropped_total)))
        if ((done_ >= requests)); then return 0; fi
        sleep 0.2
    done
    log "warning: celgate at $1 still has unexported spans after 20 s"
}
for admin in "$JAEGER_ADMIN" "$PHOENIX_ADMIN" "${SIZE_ADMIN[@]}" "$STREAM_ADMIN" "$PROTO_ADMIN"; do settle_spans "$admin"; done
spans_row() { # LABEL ADMIN SINK_STATS SINK_PID
    local requests exported dropped received sink_cpu
    requests=$(metric "$2" celgate_requests_total)
    exported=$(metric "$2" celgate_spans_exported_total)
    dropped=$(metric "$2" celgate_spans_dropped_total)
    received=$(sink_stat "$3" spans)
    sink_cpu=$(awk -v t="$(proc_ticks "$4")" -v hz="$CLK_TCK" -v n="$received" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }')
    echo "| $1 | $requests | $exported | $dropped | $received | $sink_cpu |"
}

LOAD_END=$(load_avg)

# --- report ------------------------------------------------------------------------
fmt_us() { awk -v v="$1" 'BEGIN { if (v >= 10000) printf "%.1f ms", v / 1000; else printf "%d µs", v }'; }
fmt_mb() { awk -v v="$1" 'BEGIN { if (v == "") print "—"; else printf "%.1f MB", v / 1024 }'; }
# paired KEY1 KEY2 COLUMN OP: the median over rounds of (KEY1's value OP KEY2's value) in
# the same round, OP being / or -: a ratio or difference within one round, where both
# saw the same machine noise.
paired() {
    awk -v k1="$1" -v k2="$2" -v c="$3" -v op="$4" '
        $1 == k1 { a[$2] = $c } $1 == k2 { b[$2] = $c }
        END { for (r in a) if (r in b) print (op == "/" ? (b[r] > 0 ? a[r] / b[r] : 0) : a[r] - b[r]) }' "$RESULTS" | median
}
# paired_at FILE KEY1 KEY2 SEL COLUMN: the median over rounds of KEY1's value minus
# KEY2's in the same round, in the fixed-rate results (KEY SEL ROUND ...), SEL being the
# rate or the stream's shape.
paired_at() {
    awk -v k1="$2" -v k2="$3" -v s="$4" -v c="$5" '
        $2 == s && $1 == k1 { a[$3] = $c } $2 == s && $1 == k2 { b[$3] = $c }
        END { for (r in a) if (r in b) print a[r] - b[r] }' "$1" | median
}
# at FILE KEY SEL COLUMN: the median over rounds; at_max: the largest.
at() { awk -v k="$2" -v s="$3" -v c="$4" '$1 == k && $2 == s { print $c }' "$1" | median; }
at_max() { awk -v k="$2" -v s="$3" -v c="$4" '$1 == k && $2 == s && $c > m { m = $c } END { print m + 0 }' "$1"; }
at_sum() { awk -v k="$2" -v s="$3" -v c="$4" '$1 == k && $2 == s { t += $c } END { print t + 0 }' "$1"; }
pct() { awk -v v="$1" 'BEGIN { if (v < 0.1) printf "%.1f%%", 100 * v; else printf "%.0f%%", 100 * v }'; }
# verdict 'AWK CONDITION'
verdict() { if awk "BEGIN { exit !($1) }"; then echo MET; else echo "**NOT MET**"; fi; }

PHX_VS_PROXY=$(paired e b 3 /)
ADDED_C1=$(paired e a 6 -)
ON_VS_OFF=$(paired e c 3 /)
ADDED_P99_1K=$(paired_at "$RATE_RESULTS" e a 1000 5)
# celgate's peak under load: every celgate row, saturated or at a fixed rate.
MAX_HWM=0
for k in c d e e1k e16k f1 m1 m3 r1 r3 g1 g3; do
    if ((HWM[$k] > MAX_HWM)); then MAX_HWM=${HWM[$k]}; fi
done
for rate in "${RATES[@]}"; do
    for k in c e; do
        v=$(at_max "$RATE_RESULTS" "$k" "$rate" 7)
        if ((v > MAX_HWM)); then MAX_HWM=$v; fi
    done
done
# Phoenix evaluation: criterion's last estimate, when `cargo bench` has been run here.
EVAL_EST="$CARGO_TARGET_DIR/criterion/evaluate/phoenix/new/estimates.json"
EVAL_NS="" EVAL_WHEN=""
if [ -f "$EVAL_EST" ]; then
    EVAL_NS=$(sed -E 's/.*"median":\{"confidence_interval":\{[^}]*\},"point_estimate":([0-9.eE+-]+).*/\1/' "$EVAL_EST")
    EVAL_WHEN=$(date -u -r "$EVAL_EST" '+%Y-%m-%d %H:%M UTC')
fi
TTFB_ADDED=$((TTFB_CELGATE - TTFB_DIRECT))
DRIP_ADDED=$((DRIP_CELGATE - DRIP_DIRECT))

VERSION_CELGATE=$("$CELGATE" --version | awk '{ print $2 }')
COMMIT=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO_DIR" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ", uncommitted changes" || true)
VERSION_NGINX=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
# wrk --version prints its version and usage, then exits 1.
VERSION_WRK=$( (wrk --version 2>&1 || true) | awk 'NR == 1 { print $2 }')
VERSION_RUSTC=$(rustc --version 2>/dev/null || echo unknown)
ELAPSED=$((SECONDS - RUN_START))

SECTION="$WORK/section.md"
{
    echo "## Load: celgate against nginx, measured with wrk and at fixed rates"
    echo
    echo "Generated by \`$COMMAND\` on $DATE (whole run ${ELAPSED}s, of which the release build ${BUILD_SECONDS}s)."
    echo "celgate $VERSION_CELGATE (commit $COMMIT$DIRTY), $VERSION_NGINX, wrk $VERSION_WRK, $VERSION_RUSTC."
    echo "Machine: $(machine_line). Load average at start $LOAD_START, at end $LOAD_END."
    echo
    echo "**wrk runs on the same cores as the proxy under test, the upstream and the OTLP sink**"
    echo "(there are $(nproc) of them), so every figure is what is left after the load generator"
    echo "took its share; compare rows with each other, not with numbers from a dedicated client."
    echo "wrk: POST of a 2-message chat completion, \`-t2 -c32 -d${D32}s\` for throughput, p50 and p99,"
    echo "then \`-t1 -c1 -d${D1}s\` for the concurrency-1 p50$( ((WITH_LITELLM)) && echo " (LiteLLM: ${D32_SLOW}s and ${D1_SLOW}s)")."
    echo "$ROUNDS round(s), each measuring every row in turn; the table shows the median over the"
    echo "rounds, except ratios and differences (the \"vs\" columns and the bars): those are the"
    echo "median of the per-round ratios or differences, each comparing runs seconds apart. CPU is"
    echo "utime+stime of the process under test (nginx: master and workers) over the concurrency-32"
    echo "run, divided by its requests. Peak RSS is the largest VmHWM over the row's runs, reset"
    echo "(\`clear_refs\`) before each, so a row shows its own peak, not an earlier row's."
    echo "nginx: \`worker_processes auto\`, access log off; celgate: access log off, 2 runtime workers;"
    echo "OTLP sinks: \`gateway/examples/otlp_sink.rs\` (decodes every export, answers at once)."
    echo
    echo "Rows b1k-e16k send a conversation of 1 KiB (2 messages) and 16 KiB (36 messages) instead;"
    echo "the nginx proxy there has \`client_body_buffer_size 64k\` so a body stays in memory."
    echo
    echo "| | configuration | req/s (c32) | vs nginx proxy | vs direct | p50 c32 | p99 c32 | p50 c1 | CPU/req | peak RSS | errors |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for k in "${ORDER[@]}"; do
        case $k in
        f0 | f1) vs_proxy="—" vs_direct=$(pct "$(paired "$k" f0 3 /)") ;;
        [be]1k | [be]16k) vs_proxy=$(pct "$(paired "$k" "b${SIZE_OF[$k]}" 3 /)") vs_direct="—" ;;
        [mrg][0-3]) vs_proxy="—" vs_direct=$(pct "$(paired "$k" "${DIRECT_OF[$k]}" 3 /)") ;;
        *) vs_proxy=$(pct "$(paired "$k" b 3 /)") vs_direct=$(pct "$(paired "$k" a 3 /)") ;;
        esac
        printf '| %s | %s | %.0f | %s | %s | %s | %s | %s | %s µs | %s | %s |\n' \
            "$k" "${LABEL[$k]}" "${RPS[$k]}" "$vs_proxy" "$vs_direct" \
            "$(fmt_us "${P50[$k]}")" "$(fmt_us "${P99[$k]}")" "$(fmt_us "${C1[$k]}")" "${CPU[$k]}" \
            "$(fmt_mb "${HWM[$k]:-}")" "${ERR[$k]}"
    done
    echo
    echo "Row a's CPU is the nginx origin's own; f0's is the scripted upstream's. Peak RSS of a and b"
    echo "is one nginx worker's. Errors: wrk socket errors plus non-2xx answers, all rounds."
    echo
    echo "Fixed rates (\`gateway/examples/rate.rs\`, open loop: request i is due at start + i/rate,"
    echo "latency runs from the due time to the end of the answer, so a request that waited for"
    echo "the server counts its wait; ${RATE_WARMUP} s warm-up, then ${DR} s; 32 kept-alive HTTP/1.1"
    echo "connections; percentiles from an HdrHistogram). \"added\" is the median over rounds of"
    echo "the row's figure minus row a's in the same round. \"send lag\" is how late the generator"
    echo "itself sent (its thread woke late): it is in every row alike and cancels in \"added\"."
    echo
    echo "| rate | | configuration | p50 | p99 | p99.9 | added p50 | added p99 | CPU/req | peak RSS | send lag p99 | errors |"
    echo "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for rate in "${RATES[@]}"; do
        for k in "${RATE_ROWS[@]}"; do
            if [ "$k" = a ]; then add50="—" add99="—"; else
                add50="$(printf '%.0f' "$(paired_at "$RATE_RESULTS" "$k" a "$rate" 4)") µs"
                add99="$(printf '%.0f' "$(paired_at "$RATE_RESULTS" "$k" a "$rate" 5)") µs"
            fi
            printf '| %s/s | %s | %s | %s | %s | %s | %s | %s | %s µs | %s | %s | %s |\n' \
                "$rate" "$k" "${LABEL[$k]}" "$(fmt_us "$(at "$RATE_RESULTS" "$k" "$rate" 4)")" \
                "$(fmt_us "$(at "$RATE_RESULTS" "$k" "$rate" 5)")" "$(fmt_us "$(at "$RATE_RESULTS" "$k" "$rate" 10)")" \
                "$add50" "$add99" "$(at "$RATE_RESULTS" "$k" "$rate" 6)" \
                "$(fmt_mb "$(at_max "$RATE_RESULTS" "$k" "$rate" 7)")" "$(fmt_us "$(at "$RATE_RESULTS" "$k" "$rate" 9)")" \
                "$(at_sum "$RATE_RESULTS" "$k" "$rate" 8)"
        done
    done
    echo
    echo "Streams at a fixed rate (the same tool, \`--stream\`): time to first token = due time to"
    echo "the first non-empty body chunk (the first SSE event); gap = between two chunks of one"
    echo "answer as the client reads them (back-to-back events can arrive in one read; \`drip-5\`"
    echo "has the upstream wait 5 ms before each event, so each is its own chunk)."
    echo
    echo "| stream | rate | TTFT p50 f0 / f1 | added | TTFT p99 f0 / f1 | added | gap mean f0 / f1 | added | gap p99 f0 / f1 | added | CPU/req f1 | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for shape in stream drip; do
        row="| $([ "$shape" = drip ] && echo '`drip-5`' || echo 'events back to back') | ${SRATE[$shape]}/s"
        for c in 4 5 6 7; do
            row+=" | $(fmt_us "$(at "$STREAM_RESULTS" f0 "$shape" "$c")") / $(fmt_us "$(at "$STREAM_RESULTS" f1 "$shape" "$c")")"
            row+=" | $(printf '%.0f' "$(paired_at "$STREAM_RESULTS" f1 f0 "$shape" "$c")") µs"
        done
        row+=" | $(at "$STREAM_RESULTS" f1 "$shape" 10) µs | $(($(at_sum "$STREAM_RESULTS" f0 "$shape" 9) + $(at_sum "$STREAM_RESULTS" f1 "$shape" 9))) |"
        echo "$row"
    done
    echo
    echo "| bar | target | measured | verdict |"
    echo "|---|---|---|---|"
    echo "| celgate phoenix (e) throughput vs nginx proxy (b), c32 | ≥ 50% | $(pct "$PHX_VS_PROXY") | $(verdict "$PHX_VS_PROXY >= 0.5") |"
    echo "| tracing on (e) vs off (c) throughput, c32 | ≥ 85% | $(pct "$ON_VS_OFF") | $(verdict "$ON_VS_OFF >= 0.85") |"
    echo "| added p50 at concurrency 1, e minus a | ≤ 60 µs | $(printf '%.0f' "$ADDED_C1") µs | $(verdict "$ADDED_C1 <= 60") |"
    echo "| added p99 at a fixed 1k req/s, e minus a | ≤ 200 µs | $(printf '%.0f' "$ADDED_P99_1K") µs | $(verdict "$ADDED_P99_1K <= 200") |"
    echo "| stream first byte through celgate minus direct (p50, one at a time) | ≤ 100 µs | $TTFB_ADDED µs | $(verdict "$TTFB_ADDED <= 100") |"
    echo "| celgate peak RSS under load (every celgate row, saturated and fixed-rate) | ≤ 32 MB | $(fmt_mb "$MAX_HWM") | $(verdict "$MAX_HWM <= 32768") |"
    if [ -n "$EVAL_NS" ]; then
        echo "| Phoenix preset evaluation, 10-message prompt (criterion median, $EVAL_WHEN) | ≤ 5 µs | $(awk -v n="$EVAL_NS" 'BEGIN { printf "%.2f", n / 1000 }') µs | $(verdict "$EVAL_NS <= 5000") |"
    else
        echo "| Phoenix preset evaluation, 10-message prompt | ≤ 5 µs | not measured here (\`cargo bench -p celgate-engine --bench eval -- evaluate/phoenix\`) | — |"
    fi
    echo
    echo "Time to first byte of a streamed chat completion (\`gateway/examples/ttfb.rs\`: one request"
    echo "at a time on a kept-alive connection, direct and through celgate alternating; first byte ="
    echo "first non-empty body chunk, i.e. the first SSE event):"
    echo
    echo "| stream | requests each | direct p50 | celgate p50 | added | direct p90 | celgate p90 |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    echo "| events back to back | $TTFB_N | $TTFB_DIRECT µs | $TTFB_CELGATE µs | $TTFB_ADDED µs | $TTFB_DIRECT_P90 µs | $TTFB_CELGATE_P90 µs |"
    echo "| \`drip-5\` (5 ms before each event) | $((TTFB_N / 10 + 5)) | $DRIP_DIRECT µs | $DRIP_CELGATE µs | $DRIP_ADDED µs | — | — |"
    for p in m r g; do
        echo "| ${PROTO_NAME[$p]} stream | $TTFB_N | ${PTTFB_D[$p]} µs | ${PTTFB_C[$p]} µs | $((PTTFB_C[$p] - PTTFB_D[$p])) µs | — | — |"
    done
    echo
    echo "With \`drip-5\` the whole stream took $(fmt_us "$DRIP_TOTAL_DIRECT") direct and $(fmt_us "$DRIP_TOTAL_CELGATE") through"
    echo "celgate (p50): events are passed on as they arrive, not buffered."
    echo
    echo "Spans at the end of the run (celgate's \`/metrics\`; the sink's count; the sink's CPU per span):"
    echo
    echo "| celgate | requests | spans exported | spans dropped | sink received | sink CPU/span (µs) |"
    echo "|---|---:|---:|---:|---:|---:|"
    spans_row "d (jaeger)" "$JAEGER_ADMIN" "$JAEGER_SINK_STATS" "$JAEGER_SINK_PID"
    spans_row "e (phoenix)" "$PHOENIX_ADMIN" "$PHOENIX_SINK_STATS" "$PHOENIX_SINK_PID"
    for size in 1k 16k; do
        spans_row "e$size (phoenix, $size requests)" "${SIZE_ADMIN[$size]}" "${SIZE_SINK_STATS[$size]}" "${SIZE_SINK_PID[$size]}"
    done
    spans_row "f1 (phoenix, stream)" "$STREAM_ADMIN" "$STREAM_SINK_STATS" "$STREAM_SINK_PID"
    spans_row "m1-g3 (phoenix, protocols)" "$PROTO_ADMIN" "$PROTO_SINK_STATS" "$PROTO_SINK_PID"
    if ((WITH_LITELLM)); then
        echo
        echo "LiteLLM $LITELLM_VERSION (\`bench/requirements.txt\`, config \`bench/litellm.yaml\`, one uvicorn"
        echo "worker, \`callbacks: [\"otel\"]\` exporting OTLP/gRPC): its sink received $(sink_stat "$LITELLM_SINK_STATS" spans) spans"
        echo "in $(sink_stat "$LITELLM_SINK_STATS" exports) exports."
    fi
} >"$SECTION"

cat "$SECTION"
if [ "$WRITE" = 1 ]; then
    replace_section "$REPO_DIR/BENCHMARKS.md" '<!-- load:begin -->' '<!-- load:end -->' "$SECTION"
    log "wrote the load section of BENCHMARKS.md"
fi
log "done in $((SECONDS - RUN_START))s"
