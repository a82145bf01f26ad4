# Shared by bench/run.sh and bench/faults.sh (sourced, not run).
#
# Starts and watches the processes a load run needs (nginx, celgate, the scripted
# upstream, the OTLP sink), runs wrk (closed loop, saturation) and the rate example
# (open loop, a fixed rate), and reads CPU time and memory from /proc.
# Every process it starts is recorded in PIDS and stopped, by pid, on exit.
# Needs bash 4+, perl (perl-base, to pick free ports for nginx), wrk and nginx
# (installed by ensure_tools when missing).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
: "${CARGO_TARGET_DIR:=$REPO_DIR/target}"
export CARGO_TARGET_DIR
RELEASE_DIR="$CARGO_TARGET_DIR/release"
CELGATE="$RELEASE_DIR/celgate"
SINK="$RELEASE_DIR/examples/otlp_sink"
TTFB="$RELEASE_DIR/examples/ttfb"
RATE="$RELEASE_DIR/examples/rate"
BARE="$RELEASE_DIR/examples/bare_proxy"
CLK_TCK=$(getconf CLK_TCK)
# The backend key celgate sends upstream (nginx ignores it).
export BENCH_BACKEND_KEY=sk-bench-backend-key

WORK=$(mktemp -d /tmp/bench-XXXXXX)
PIDS=()

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() {
    echo "bench: FAILED: $*" >&2
    exit 1
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done 2>/dev/null
    if [ -n "${BENCH_KEEP_WORK:-}" ]; then
        echo "bench: logs and configs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# nginx and wrk from Debian's packages when missing (as root, non-interactive).
ensure_tools() {
    local missing=() sudo=""
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v perl >/dev/null || missing+=(perl-base)
    if ((${#missing[@]})); then
        if [ "$(id -u)" != 0 ]; then
            command -v sudo >/dev/null || die "${missing[*]} missing and not root: install nginx-light and wrk (apt-get install -y nginx-light wrk)"
            sudo="sudo -n"
        fi
        log "installing ${missing[*]} with apt-get"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
            die "apt-get update failed (needed to install ${missing[*]})"
        local pkgs=()
        for p in "${missing[@]}"; do
            case $p in
            nginx)
                # nginx-light where the distribution still has it (Debian 12), else nginx.
                if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
                ;;
            *) pkgs+=("$p") ;;
            esac
        done
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2 ||
            die "apt-get install ${pkgs[*]} failed"
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    [ -x "$NGINX" ] || die "nginx is not installed (apt-get install -y nginx-light)"
    command -v wrk >/dev/null || die "wrk is not installed (apt-get install -y wrk)"
    command -v perl >/dev/null || die "perl is not installed"
}

# The release binary and the three bench examples, built in one cargo invocation.
build_release() {
    log "building release: cargo build --release --locked -p celgate --bin celgate --example otlp_sink --example ttfb --example rate --example bare_proxy"
    local start=$SECONDS
    (cd "$REPO_DIR" && cargo build --release --locked -p celgate --bin celgate --example otlp_sink --example ttfb --example rate --example bare_proxy) ||
        die "the release build failed"
    BUILD_SECONDS=$((SECONDS - start))
    log "release build took ${BUILD_SECONDS}s"
}

# A free loopback port: bound to port 0 and read back, then released for nginx
# (which cannot listen on port 0). start_nginx retries when the port was taken
# in between.
free_port() {
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:0") or die "bind: $!\n";
        print $s->sockport, "\n";'
}

# True once HOST:PORT accepts a TCP connection.
port_open() {
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

# Waits (polling) until the file $1 has a line matching the regex $2, the process
# $3 exits, or $4 seconds pass. Prints the first matching line.
wait_for_line() {
    local file=$1 regex=$2 pid=$3 deadline=$((SECONDS + ${4:-60})) line
    while ((SECONDS < deadline)); do
        if line=$(grep -m1 -E "$regex" "$file" 2>/dev/null); then
            printf '%s\n' "$line"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# start_nginx NAME 'LOCATION-AND-OTHER-SERVER-DIRECTIVES' ['HTTP-LEVEL-DIRECTIVES']
# Sets NGINX_PORT and NGINX_PID.
start_nginx() {
    local name=$1 server=$2 extra=${3:-} dir="$WORK/nginx-$1" try port pid
    mkdir -p "$dir/tmp"
    for try in 1 2 3 4 5; do
        port=$(free_port) || die "cannot pick a free port"
        cat >"$dir/nginx.conf" <<EOF
worker_processes ${NGINX_WORKERS:-auto};
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    $extra
    server {
        listen 127.0.0.1:$port;
        $server
    }
}
EOF
        "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        local deadline=$((SECONDS + 10))
        while ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null; do
            if port_open "127.0.0.1:$port"; then
                NGINX_PORT=$port
                NGINX_PID=$pid
                log "nginx $name on 127.0.0.1:$port (pid $pid)"
                return 0
            fi
            sleep 0.05
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        unset 'PIDS[-1]'
        grep -q "Address already in use" "$dir/error.log" "$dir/stdout.log" 2>/dev/null ||
            die "nginx $name did not start: $(cat "$dir/error.log" "$dir/stdout.log" 2>/dev/null)"
        log "nginx $name: port $port was taken meanwhile, trying another"
    done
    die "nginx $name: no free port after 5 tries"
}

# The nginx origin: answers every request with a fixed chat completion.
ORIGIN_BODY='{"id":"chatcmpl-bench","object":"chat.completion","created":1750000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris.","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":8,"total_tokens":39,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_bench"}'

start_origin() {
    start_nginx origin "location / { default_type application/json; return 200 '$ORIGIN_BODY'; }"
    ORIGIN_PORT=$NGINX_PORT
    ORIGIN_PID=$NGINX_PID
}

# start_sink NAME [otlp_sink args...]: sets SINK_GRPC, SINK_HTTP, SINK_STATS, SINK_PID.
start_sink() {
    local name=$1 dir="$WORK/sink-$1" line pid
    shift
    mkdir -p "$dir"
    "$SINK" "$@" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    pid=$!
    PIDS+=("$pid")
    line=$(wait_for_line "$dir/stdout.log" '^otlp_sink ready' "$pid" 30) ||
        die "otlp_sink $name did not start: $(cat "$dir/stderr.log")"
    SINK_GRPC=$(sed -E 's/.* grpc=([^ ]+).*/\1/' <<<"$line")
    SINK_HTTP=$(sed -E 's/.* http=([^ ]+).*/\1/' <<<"$line")
    SINK_STATS=$(sed -E 's/.* stats=([^ ]+).*/\1/' <<<"$line")
    SINK_PID=$pid
    log "otlp_sink $name: $line (pid $pid)"
}

# The address in a `WHAT listening on ADDR` log line of file $1.
listening_addr() {
    sed -E 's/\x1b\[[0-9;]*[A-Za-z]//g' "$1" | grep -m1 -E "$2 listening on " |
        sed -E "s/.*$2 listening on ([0-9.:]+).*/\1/"
}

# start_celgate NAME CONFIG_YAML: sets CG_ADDR, CG_ADMIN, CG_PID.
start_celgate() {
    local name=$1 dir="$WORK/celgate-$1" pid
    mkdir -p "$dir"
    printf '%s\n' "$2" >"$dir/config.yaml"
    "$CELGATE" run --config "$dir/config.yaml" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    pid=$!
    PIDS+=("$pid")
    wait_for_line "$dir/stderr.log" 'admin listening on ' "$pid" 60 >/dev/null ||
        die "celgate $name did not start: $(cat "$dir/stderr.log")"
    CG_ADDR=$(listening_addr "$dir/stderr.log" proxy)
    CG_ADMIN=$(listening_addr "$dir/stderr.log" admin)
    [ -n "$CG_ADDR" ] && [ -n "$CG_ADMIN" ] || die "celgate $name: cannot read its addresses from $(cat "$dir/stderr.log")"
    CG_PID=$pid
    log "celgate $name: proxy $CG_ADDR, admin $CG_ADMIN (pid $pid)"
}

# `celgate upstream` (the scripted OpenAI-compatible upstream): sets UP_ADDR, UP_PID.
start_upstream() {
    local dir="$WORK/upstream" pid
    mkdir -p "$dir"
    "$CELGATE" upstream --listen 127.0.0.1:0 >"$dir/stdout.log" 2>"$dir/stderr.log" &
    pid=$!
    PIDS+=("$pid")
    wait_for_line "$dir/stderr.log" 'scripted upstream listening on ' "$pid" 30 >/dev/null ||
        die "celgate upstream did not start: $(cat "$dir/stderr.log")"
    UP_ADDR=$(listening_addr "$dir/stderr.log" "scripted upstream")
    UP_PID=$pid
    log "scripted upstream on $UP_ADDR (pid $pid)"
}

# start_bare ORIGIN_HOST:PORT: the bare hyper proxy (gateway/examples/bare_proxy.rs),
# celgate's stack without celgate; sets BARE_ADDR, BARE_PID.
start_bare() {
    local dir="$WORK/bare" pid
    mkdir -p "$dir"
    "$BARE" --origin "$1" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    pid=$!
    PIDS+=("$pid")
    wait_for_line "$dir/stdout.log" 'bare_proxy ready ' "$pid" 30 >/dev/null ||
        die "bare_proxy did not start: $(cat "$dir/stderr.log")"
    BARE_ADDR=$(sed -n 's/^bare_proxy ready listen=//p' "$dir/stdout.log")
    BARE_PID=$pid
    log "bare proxy on $BARE_ADDR (pid $pid)"
}

# A celgate config: celgate_config BASE_URL [TRACING_BLOCK]
celgate_config() {
    local tracing=${2:-}
    # No exporter and nothing sampled: no span is evaluated or sent.
    [ -n "$tracing" ] || tracing=$'  tracing:\n    randomSampling: false'
    cat <<EOF
config:
$tracing
listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
  - name: origin
    provider: openai
    baseUrl: $1
    apiKey: {env: BENCH_BACKEND_KEY}
server:
  accessLog: {format: "off"}
EOF
}

# protocols_config ORIGIN [TRACING]: a backend per provider, each at ORIGIN (the
# scripted upstream, which speaks every protocol).
protocols_config() {
    local tracing=${2:-}
    [ -n "$tracing" ] || tracing=$'  tracing:\n    randomSampling: false'
    cat <<EOF
config:
$tracing
listen: 127.0.0.1:0
admin: 127.0.0.1:0
backends:
  - {name: openai, provider: openai, baseUrl: $1/v1, apiKey: {env: BENCH_BACKEND_KEY}, models: ["gpt-*"]}
  - {name: anthropic, provider: anthropic, baseUrl: $1/v1, apiKey: {env: BENCH_BACKEND_KEY}, models: ["claude-*"]}
  - {name: gemini, provider: gemini, baseUrl: $1/v1beta, apiKey: {env: BENCH_BACKEND_KEY}, models: ["gemini-*"]}
server:
  accessLog: {format: "off"}
EOF
}

# write_protocol_bodies DIR: a JSON and a streamed request per protocol, the same
# conversation as the chat rows (a system prompt and a short question).
write_protocol_bodies() {
    local sys="You are a helpful assistant that answers briefly." q="What is the capital of France? Answer in one short sentence."
    printf '{"model":"claude-sonnet-4-5","max_tokens":64,"system":"%s","messages":[{"role":"user","content":"%s"}]}' "$sys" "$q" >"$1/m-json.json"
    printf '{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"system":"%s","messages":[{"role":"user","content":"%s"}]}' "$sys" "$q" >"$1/m-stream.json"
    printf '{"model":"gpt-4.1-mini","max_output_tokens":64,"instructions":"%s","input":"%s"}' "$sys" "$q" >"$1/r-json.json"
    printf '{"model":"gpt-4.1-mini","max_output_tokens":64,"stream":true,"instructions":"%s","input":"%s"}' "$sys" "$q" >"$1/r-stream.json"
    printf '{"systemInstruction":{"parts":[{"text":"%s"}]},"contents":[{"role":"user","parts":[{"text":"%s"}]}],"generationConfig":{"maxOutputTokens":64}}' "$sys" "$q" >"$1/g-json.json"
    cp "$1/g-json.json" "$1/g-stream.json"
}

# tracing_block PRESET ENDPOINT PROTOCOL
tracing_block() {
    cat <<EOF
  tracing:
    preset: $1
    otlpEndpoint: $2
    otlpProtocol: $3
    randomSampling: true
EOF
}

# http_get HOST:PORT PATH: the response body (HTTP/1.0 over bash's /dev/tcp, so
# curl is not needed).
http_get() {
    timeout 10 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$0" >&3
        cat <&3' "${1%:*}" "${1##*:}" "$2" | sed '1,/^\r*$/d'
}

# metric ADMIN NAME: the sum of every series of the counter NAME on /metrics.
metric() {
    http_get "$1" /metrics | awk -v n="$2" '
        index($0, n) == 1 && (substr($0, length(n) + 1, 1) == "{" || substr($0, length(n) + 1, 1) == " ") { s += $NF }
        END { printf "%d\n", s }'
}

# sink_stat STATS_ADDR NAME
sink_stat() {
    http_get "$1" /stats | awk -v n="$2" '$1 == n { print $2 }'
}

# Direct children of pid $1.
children_of() {
    local s r f
    for s in /proc/[0-9]*/stat; do
        r=$(cat "$s" 2>/dev/null) || continue
        r=${r##*) }
        read -ra f <<<"$r"
        if [ "${f[1]}" = "$1" ]; then
            s=${s#/proc/}
            echo "${s%/stat}"
        fi
    done
}

# CPU ticks (utime + stime, all threads) of the given pids together.
proc_ticks() {
    local total=0 pid r f
    for pid in "$@"; do
        r=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        r=${r##*) }
        read -ra f <<<"$r"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# status_kb PID FIELD: VmRSS, VmHWM, ... in kB.
status_kb() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# reset_peak PIDS...: each one's VmHWM back to its current RSS (clear_refs "5"), so
# that peak_kb after a run reads the peak of that run, not of the process's life.
reset_peak() {
    local pid
    for pid in "$@"; do
        echo 5 2>/dev/null >"/proc/$pid/clear_refs" || true
    done
}

# peak_kb PIDS...: the largest VmHWM among them (nginx: its biggest process).
peak_kb() {
    local pid v max=0
    for pid in "$@"; do
        v=$(status_kb "$pid" VmHWM 2>/dev/null) || continue
        if ((${v:-0} > max)); then max=$v; fi
    done
    echo "$max"
}

# run_rate RATE SECONDS URL BODY_FILE [rate args...]: one open-loop run of the rate
# example (RATE_WARMUP seconds first, not counted); sets R_ok, R_errors, R_p50_us,
# R_p99_us, R_lag_p99_us, ... (with --stream also R_ttft_*, R_gap_*).
run_rate() {
    local rate=$1 d=$2 url=$3 body=$4 out line kv
    shift 4
    out=$("$RATE" --rate "$rate" --duration "$d" --warmup "${RATE_WARMUP:-1}" --body "$body" "$@" "$url" 2>&1) ||
        die "rate failed against $url: $out"
    line=$(grep '^RATE ' <<<"$out") || die "rate printed no result against $url: $out"
    for kv in ${line#RATE }; do
        printf -v "R_${kv%%=*}" '%s' "${kv#*=}"
    done
}

# write_chat_body FILE BYTES: a chat completion request of exactly BYTES bytes, a
# conversation of ~400-character user and assistant turns after a system prompt (the
# last turn, the user's, cut to fit), like a chat client resending its history.
write_chat_body() {
    perl -e '
        my ($n) = @ARGV;
        my $turn = "Here is the next part of the text we are discussing; keep the thread of it in mind. " x 5;
        my $head = q({"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly."});
        my $tail = q(],"temperature":0.2,"max_tokens":64});
        my ($body, $i) = ("", 0);
        while (1) {
            my $role = $i++ % 2 ? "assistant" : "user";
            my $pre = qq(,{"role":"$role","content":");
            my $room = $n - length($head) - length($body) - length($tail) - length($pre) - 2;
            die "$n bytes is too small for a chat body
" if $room < 1 && $body eq "";
            if ($role eq "user" && $room <= 2 * length($turn) + 60) {
                $body .= $pre . substr($turn x 3, 0, $room) . q("});
                last;
            }
            $body .= $pre . $turn . q("});
        }
        print $head, $body, $tail;' "$2" >"$1" || die "cannot write a $2-byte chat body"
}

# run_wrk THREADS CONNS SECONDS URL [chat.lua args...]: runs wrk and sets W_requests,
# W_duration_us, W_err_*, W_lat_p50_us, W_lat_p99_us, ... and W_rps.
run_wrk() {
    local t=$1 c=$2 d=$3 url=$4 out line kv
    shift 4
    out=$(wrk -t"$t" -c"$c" -d"${d}s" --timeout 10s -s "$BENCH_DIR/chat.lua" "$url" -- "$@" 2>&1) ||
        die "wrk failed against $url: $out"
    line=$(grep '^WRK_RESULT' <<<"$out") || die "wrk printed no result against $url: $out"
    for kv in ${line#WRK_RESULT }; do
        printf -v "W_${kv%%=*}" '%s' "${kv#*=}"
    done
    W_rps=$(awk -v r="$W_requests" -v d="$W_duration_us" 'BEGIN { printf "%.1f", r / (d / 1e6) }')
    W_errors=$((W_err_connect + W_err_read + W_err_write + W_err_status + W_err_timeout))
}

# Median of the numbers on stdin (mean of the two middle ones for an even count).
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# replace_section FILE BEGIN_MARKER END_MARKER CONTENT_FILE: the lines between the
# markers (markers kept) become CONTENT_FILE; appended at the end when absent.
replace_section() {
    local file=$1 begin=$2 end=$3 content=$4 tmp
    tmp=$(mktemp "$WORK/section.XXXXXX")
    if grep -qF "$begin" "$file" && grep -qF "$end" "$file"; then
        awk -v b="$begin" -v e="$end" -v c="$content" '
            $0 == b { print; while ((getline line < c) > 0) print line; skip = 1; next }
            $0 == e { skip = 0 }
            !skip { print }' "$file" >"$tmp"
    else
        { cat "$file"; printf '\n%s\n' "$begin"; cat "$content"; printf '%s\n' "$end"; } >"$tmp"
    fi
    cat "$tmp" >"$file"
}

machine_line() {
    local cpu
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo "nproc $(nproc), ${cpu:-unknown CPU}, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r)"
}

load_avg() {
    cut -d' ' -f1-3 /proc/loadavg
}
