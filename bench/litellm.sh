# LiteLLM's proxy as a peer for bench/run.sh --with-litellm (sourced by run.sh, after
# lib.sh). Not part of CI: the virtualenv alone is a few hundred MB.
#
# The virtualenv lives in bench/.venv (gitignored) and is (re)built whenever
# bench/requirements.txt changes. LiteLLM runs with bench/litellm.yaml: one model
# routed to the same nginx origin as celgate, `callbacks: ["otel"]` exporting
# OTLP/gRPC to an otlp_sink, one uvicorn worker, no database.

LITELLM_VENV="$BENCH_DIR/.venv"

litellm_venv() {
    local python=${PYTHON:-python3} stamp="$LITELLM_VENV/.requirements.txt"
    command -v "$python" >/dev/null || die "--with-litellm needs python3 (3.9+) to create $LITELLM_VENV"
    if [ ! -x "$LITELLM_VENV/bin/litellm" ] || ! cmp -s "$BENCH_DIR/requirements.txt" "$stamp"; then
        log "creating $LITELLM_VENV from bench/requirements.txt (a few minutes the first time)"
        "$python" -m venv "$LITELLM_VENV" || die "cannot create the virtualenv $LITELLM_VENV"
        "$LITELLM_VENV/bin/pip" install -q --disable-pip-version-check -r "$BENCH_DIR/requirements.txt" >&2 ||
            die "pip install -r bench/requirements.txt failed"
        cp "$BENCH_DIR/requirements.txt" "$stamp"
    fi
    # LiteLLM 1.82.7 and 1.82.8 on PyPI carried a credential stealer that installed
    # litellm_init.pth; refuse to start anything from a virtualenv holding one.
    if find "$LITELLM_VENV" -name 'litellm_init.pth' | grep -q .; then
        die "$LITELLM_VENV contains litellm_init.pth (the March 2026 LiteLLM compromise): delete the virtualenv and check the machine"
    fi
    LITELLM_VERSION=$("$LITELLM_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))') ||
        die "litellm is not importable from $LITELLM_VENV"
}

# start_litellm ORIGIN_BASE_URL OTLP_GRPC_ENDPOINT: sets LITELLM_ADDR, LITELLM_PID,
# LITELLM_VERSION.
start_litellm() {
    local origin=$1 otlp=$2 dir="$WORK/litellm" port pid try deadline
    litellm_venv
    mkdir -p "$dir"
    for try in 1 2 3; do
        port=$(free_port) || die "cannot pick a free port"
        # No network here: use the bundled model cost map, send no telemetry. No
        # access log (celgate's and nginx's are off too).
        env -u OTEL_EXPORTER_OTLP_ENDPOINT -u OTEL_EXPORTER_OTLP_PROTOCOL -u OTEL_EXPORTER_OTLP_HEADERS \
            BENCH_ORIGIN_URL="$origin" \
            OTEL_EXPORTER=otlp_grpc OTEL_ENDPOINT="$otlp" OTEL_SERVICE_NAME=litellm-bench \
            LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
            "$LITELLM_VENV/bin/litellm" --config "$BENCH_DIR/litellm.yaml" \
            --host 127.0.0.1 --port "$port" --num_workers 1 --telemetry False \
            --log_config "$BENCH_DIR/litellm-log.json" \
            >"$dir/stdout.log" 2>"$dir/stderr.log" &
        pid=$!
        PIDS+=("$pid")
        deadline=$((SECONDS + 180))
        while ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null; do
            if port_open "127.0.0.1:$port"; then
                LITELLM_ADDR="127.0.0.1:$port"
                LITELLM_PID=$pid
                log "LiteLLM $LITELLM_VERSION on $LITELLM_ADDR (pid $pid)"
                return 0
            fi
            sleep 0.2
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        unset 'PIDS[-1]'
        grep -qi "address already in use" "$dir/stderr.log" "$dir/stdout.log" ||
            die "LiteLLM did not start: $(tail -30 "$dir/stderr.log" "$dir/stdout.log")"
        log "LiteLLM: port $port was taken meanwhile, trying another"
    done
    die "LiteLLM: no free port after 3 tries"
}
