"""A streamed call the official `openai` Python SDK completes is recorded as complete.

The SDK stops reading at `data: [DONE]` and closes the response. On a real network the
backend's end of body often arrives a few ms after `[DONE]`, so the client's close
reaches celgate first; celgate used to record such a call as failed (status ERROR,
`error.type=client_disconnected`). Here the scripted upstream's `done-pause-500`
script holds the body open for 500 ms after `[DONE]`, and for every preset:

- STREAMS calls stream through celgate with the SDK; each span must be OK-or-unset
  with no `error.type`, and the SDK must have got the whole answer;
- one call leaves after its first chunk of a slow stream (`drip-300`): that one is
  still `client_disconnected`.

Spans are read from celgate's `otlpEndpoint: stdout` dump after a graceful stop.

    CELGATE_BIN=target/debug/celgate tests/e2e/.venv/bin/python tests/e2e/test_sdk_stream_close.py

Exit status 0 when every check passed, 1 otherwise; the last line is
`e2e: N passed, N failed` (one per call).
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import tempfile
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_phoenix import Proc, clean_env, free_port, log  # noqa: E402

PRESETS = ["phoenix", "langfuse", "openllmetry", "jaeger"]
STREAMS = 5
UPSTREAM_KEY = "sk-scripted-close-" + secrets.token_hex(8)
WANT = "Scripted reply to: Say it and close"


def config(path: Path, preset: str, port: int, upstream: str) -> None:
    path.write_text(f"""config:
  tracing:
    preset: {preset}
    otlpEndpoint: stdout
    randomSampling: true
listen: 127.0.0.1:{port}
admin: 127.0.0.1:0
backends:
  - name: scripted
    provider: openai
    baseUrl: {upstream}/v1
    apiKey: {{env: CLOSE_UPSTREAM_KEY}}
""")


def spans_by_trace(stdout: str) -> dict[str, tuple[str, dict[str, str]]]:
    """`trace id -> (status, attributes)` from the stdout span dump."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for block in stdout.split("── span ")[1:]:
        lines = block.splitlines()
        head = re.search(r"status=(.*) trace=([0-9a-f]{32})", lines[0])
        if not head:
            continue
        attrs = {}
        for line in lines[1:]:
            m = re.match(r"   (\S+) = (.*)$", line)
            if not m:
                break
            attrs[m.group(1)] = m.group(2)
        out[head.group(2)] = (head.group(1), attrs)
    return out


def traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def run_preset(celgate: str, preset: str, upstream: str, logdir: Path) -> tuple[int, int]:
    port = free_port()
    path = logdir / f"{preset}.yaml"
    config(path, preset, port, upstream)
    gw = Proc(f"celgate-{preset}", [celgate, "run", "--config", str(path)],
              clean_env(CLOSE_UPSTREAM_KEY=UPSTREAM_KEY), logdir,
              wait_for=re.compile(r"proxy listening on (\S+)"))
    gw.wait_line(1, 30)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-client",
                           max_retries=0, timeout=30)
    calls: list[tuple[str, str, str]] = []  # (what, trace id, expected error.type or "")
    failures: list[str] = []
    for i in range(STREAMS):
        trace_id, tp = traceparent()
        stream = client.chat.completions.create(
            model="done-pause-500", stream=True,
            messages=[{"role": "user", "content": "Say it and close"}],
            extra_headers={"traceparent": tp})
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        if text != WANT:
            failures.append(f"{preset} stream {i}: the SDK got {text!r}, not {WANT!r}")
        calls.append((f"stream {i}", trace_id, ""))
    trace_id, tp = traceparent()
    stream = client.chat.completions.create(
        model="drip-300", stream=True,
        messages=[{"role": "user", "content": "Say a few words slowly"}],
        extra_headers={"traceparent": tp})
    for _ in stream:
        break
    stream.close()
    calls.append(("left after one chunk", trace_id, "client_disconnected"))
    code = gw.stop()
    if code != 0:
        failures.append(f"{preset}: celgate exited with {code}\n{gw.tail()}")
    spans = spans_by_trace(gw.stdout_path.read_text("utf-8", "replace"))
    passed = 0
    for what, trace_id, want_error in calls:
        label = f"{preset} {what}"
        if trace_id not in spans:
            failures.append(f"{label}: no span (trace {trace_id})")
            continue
        status, attrs = spans[trace_id]
        error_type = attrs.get("error.type", "").strip('"')
        if want_error:
            ok = status.startswith("Error") and error_type == want_error
        else:
            ok = not status.startswith("Error") and "error.type" not in attrs
        if ok:
            passed += 1
            log(f"ok   {label}: status {status}, error.type {error_type or '-'}")
        else:
            failures.append(f"{label}: status {status}, error.type {error_type or '-'} "
                            f"(want {want_error or 'none'})")
    for f in failures:
        log(f"FAIL {f}")
    return passed, len(calls) - passed


def main() -> int:
    celgate = os.environ.get("CELGATE_BIN")
    if not celgate or not os.access(celgate, os.X_OK):
        log(f"CELGATE_BIN must name the celgate binary (got {celgate!r})")
        return 2
    log(f"openai SDK {openai.__version__}")
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="celgate-sdk-close-") as tmp:
        logdir = Path(tmp)
        up = Proc("upstream", [celgate, "upstream", "--listen", "127.0.0.1:0"], clean_env(),
                  logdir, wait_for=re.compile(r"scripted upstream listening on (\S+)"))
        try:
            upstream = "http://" + up.wait_line(1, 30)[0].group(1)
            for preset in PRESETS:
                p, f = run_preset(celgate, preset, upstream, logdir)
                passed += p
                failed += f
        finally:
            up.stop()
    print(f"e2e: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
