"""Regenerate the reference spans the presets are compared with (tests/reference_spans.rs).

For each backend's own instrumentation of each SDK, the official SDK makes the calls in
`calls/` (a request body and the answer a provider would give) against a local server
that replays those answers byte for byte, and the instrumentation's spans are saved,
normalized, as `<instrumentation>/<case>.json`. The same request and answer files are
what the engine's fixture exchanges (`engine/src/fixture.rs`) were parsed from, so a
preset and its reference render the same call.

    python3 -m venv tests/e2e/.venv-refs
    tests/e2e/.venv-refs/bin/pip install -r tests/e2e/references/requirements.txt
    python3 -m venv tests/e2e/.venv-refs-openai-v2
    tests/e2e/.venv-refs-openai-v2/bin/pip install -r tests/e2e/references/requirements-openai-v2.txt
    tests/e2e/.venv-refs/bin/python tests/e2e/references/capture.py

OTel's openai-v2 2.4b0 imports `opentelemetry.util.genai.instruments`, which
opentelemetry-util-genai 1.2 renamed, while OTel's google-genai 1.3b0 needs util-genai
1.3: the openai-v2 captures run in a venv of their own ([`VENVS`]).

Each instrumentation runs in a subprocess of its own (`--one NAME`), so one's
monkey-patching or environment never reaches another's spans.

The answers are replayed rather than asked of `celgate upstream`: the references are
reviewed files, and they must hold the exact answers the fixture exchanges hold. The live
comparison through celgate and the scripted upstream is tests/e2e/test_phoenix.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
CALLS = HERE / "calls"

# Which cases each protocol has (the file stems in calls/).
CASES = {
    "messages": ["messages_json", "messages_stream_tools", "messages_thinking"],
    "responses": ["responses_json", "responses_stream_tools", "responses_reasoning"],
    "generate_content": ["gemini_json", "gemini_stream_tools", "gemini_thinking"],
    "chat": ["chat_json", "chat_stream", "chat_stream_tools", "chat_tool_result"],
}

# Session and user as the instrumentations take them (OpenInference's context
# attributes); the fixture exchanges carry the same ids.
SESSION_ID = "session-42"
USER_ID = "user-7"

# (instrumentation, distribution, protocols, environment)
REFERENCES: list[tuple[str, str, list[str], dict[str, str]]] = [
    ("openinference-anthropic", "openinference-instrumentation-anthropic", ["messages"], {}),
    ("openinference-openai", "openinference-instrumentation-openai", ["responses"], {}),
    ("openinference-google-genai", "openinference-instrumentation-google-genai",
     ["generate_content"], {}),
    ("traceloop-anthropic", "opentelemetry-instrumentation-anthropic", ["messages"],
     {"TRACELOOP_TRACE_CONTENT": "true"}),
    ("traceloop-openai", "opentelemetry-instrumentation-openai", ["responses", "chat"],
     {"TRACELOOP_TRACE_CONTENT": "true"}),
    ("traceloop-google-generativeai", "opentelemetry-instrumentation-google-generativeai",
     ["generate_content"], {"TRACELOOP_TRACE_CONTENT": "true"}),
    # OTel's own google-genai instrumentation, content off (its default) and on in spans.
    ("otel-google-genai", "opentelemetry-instrumentation-google-genai", ["generate_content"],
     {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}),
    ("otel-google-genai-content", "opentelemetry-instrumentation-google-genai",
     ["generate_content"],
     {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
      "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"}),
    # OTel's own openai instrumentation (Chat Completions), the same two ways.
    ("otel-openai-v2", "opentelemetry-instrumentation-openai-v2", ["chat"],
     {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}),
    ("otel-openai-v2-content", "opentelemetry-instrumentation-openai-v2", ["chat"],
     {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
      "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"}),
    # The Langfuse SDK's OpenAI integration (`from langfuse.openai import OpenAI`): its
    # spans are what Langfuse's OTel ingestion reads from its own SDK.
    ("langfuse-openai", "langfuse", ["chat"], {}),
]


# Instrumentations whose pins conflict with the rest: the venv (under tests/e2e/) whose
# python captures them; the others run in the interpreter running this script.
VENVS = {
    "otel-openai-v2": ".venv-refs-openai-v2",
    "otel-openai-v2-content": ".venv-refs-openai-v2",
}


# ---------------------------------------------------------------------------------------
# The replaying upstream
# ---------------------------------------------------------------------------------------

class Replay:
    """Answers every POST with the current case's recorded answer; keeps what was sent."""

    def __init__(self) -> None:
        self.case = ""
        self.sent: list[dict[str, Any]] = []
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            # Fixed, so that the SDK dumps some instrumentations keep as output.value
            # do not change from one capture to the next.
            def date_time_string(self, timestamp: Any = None) -> str:
                return "Tue, 01 Dec 2026 12:00:00 GMT"

            def version_string(self) -> str:
                return "replay"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                replay.sent.append({"path": self.path, "body": json.loads(body or b"null")})
                sse = CALLS / f"{replay.case}.response.sse"
                path = sse if sse.exists() else CALLS / f"{replay.case}.response.json"
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("content-type", "text/event-stream" if sse.exists()
                                 else "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def request(case: str) -> dict[str, Any]:
    return json.loads((CALLS / f"{case}.request.json").read_text())


# ---------------------------------------------------------------------------------------
# The SDK calls, one per protocol, as an application would write them
# ---------------------------------------------------------------------------------------

def call_messages(base: str, case: str) -> None:
    import anthropic

    body = request(case)
    client = anthropic.Anthropic(base_url=base, api_key="sk-ant-reference", max_retries=0)
    # anthropic 2.x takes sampling parameters only through extra_body.
    extra = {k: body.pop(k) for k in ("temperature", "top_p", "top_k") if k in body}
    if body.pop("stream", False):
        for _ in client.messages.create(**body, stream=True, extra_body=extra or None):
            pass
    else:
        client.messages.create(**body, extra_body=extra or None)


def call_responses(base: str, case: str) -> None:
    import openai

    body = request(case)
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-reference", max_retries=0)
    if body.pop("stream", False):
        for _ in client.responses.create(**body, stream=True):
            pass
    else:
        client.responses.create(**body)


def call_generate_content(base: str, case: str) -> None:
    from google import genai
    from google.genai import types

    body = request(case)
    client = genai.Client(api_key="gem-reference",
                          http_options=types.HttpOptions(base_url=base, api_version="v1beta"))
    config: dict[str, Any] = dict(body.get("generationConfig", {}))
    for key in ("systemInstruction", "tools"):
        if key in body:
            config[key] = body[key]
    model = "gemini-2.5-flash"
    if case.endswith("_stream_tools"):
        for _ in client.models.generate_content_stream(model=model, contents=body["contents"],
                                                       config=config):
            pass
    else:
        client.models.generate_content(model=model, contents=body["contents"], config=config)


def call_chat(base: str, case: str, openai_module: Any = None) -> None:
    if openai_module is None:
        import openai as openai_module

    body = request(case)
    client = openai_module.OpenAI(base_url=f"{base}/v1", api_key="sk-reference", max_retries=0)
    if body.pop("stream", False):
        for _ in client.chat.completions.create(**body, stream=True):
            pass
    else:
        client.chat.completions.create(**body)


def call_chat_langfuse(base: str, case: str) -> None:
    """The same call through Langfuse's drop-in `openai` module."""
    from langfuse.openai import openai as langfuse_openai

    call_chat(base, case, langfuse_openai)


CALLERS: dict[str, Callable[[str, str], None]] = {
    "messages": call_messages,
    "responses": call_responses,
    "generate_content": call_generate_content,
    "chat": call_chat,
}


# ---------------------------------------------------------------------------------------
# The instrumentations
# ---------------------------------------------------------------------------------------

def instrumentor(name: str) -> Any:
    if name == "openinference-anthropic":
        from openinference.instrumentation.anthropic import AnthropicInstrumentor
        return AnthropicInstrumentor()
    if name == "openinference-openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor
        return OpenAIInstrumentor()
    if name == "openinference-google-genai":
        from openinference.instrumentation.google_genai import GoogleGenAIInstrumentor
        return GoogleGenAIInstrumentor()
    if name == "traceloop-anthropic":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
        return AnthropicInstrumentor()
    if name == "traceloop-openai":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
        return OpenAIInstrumentor()
    if name == "traceloop-google-generativeai":
        from opentelemetry.instrumentation.google_generativeai import (
            GoogleGenerativeAiInstrumentor,
        )
        return GoogleGenerativeAiInstrumentor()
    if name.startswith("otel-openai-v2"):
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        return OpenAIInstrumentor()
    if name.startswith("otel-google-genai"):
        from opentelemetry.instrumentation.google_genai import GoogleGenAiSdkInstrumentor
        return GoogleGenAiSdkInstrumentor()
    raise SystemExit(f"unknown instrumentation {name}")


def normalize(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [normalize(v) for v in value]
    return value


# Attributes whose value is a measurement of this run, kept with a fixed value so that
# regenerating the references changes nothing that matters.
MEASURED = {
    "gen_ai.response.time_to_first_chunk": 0.01,
    "langfuse.observation.completion_start_time": "\"2026-12-01T12:00:00.180000Z\"",
    # The replay server's port, new each run.
    "gen_ai.openai.api_base": "http://127.0.0.1:8000/v1/",
}


def span_record(span: Any) -> dict[str, Any]:
    attributes = {k: MEASURED.get(k, normalize(v)) for k, v in sorted(span.attributes.items())}
    return {
        "name": span.name,
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "attributes": attributes,
    }


def run_one(name: str, out: Path) -> None:
    """Capture one instrumentation's spans for every case of its protocols."""
    from importlib.metadata import version

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    ref = next(r for r in REFERENCES if r[0] == name)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    replay = Replay()
    if name == "langfuse-openai":
        inst: Any = LangfuseClient(replay.base, exporter)
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        inst = instrumentor(name)
    inst.instrument(tracer_provider=provider)
    callers = {**CALLERS, "chat": call_chat_langfuse} if name == "langfuse-openai" else CALLERS
    (out / name).mkdir(parents=True, exist_ok=True)
    for protocol in ref[2]:
        for case in CASES[protocol]:
            exporter.clear()
            replay.case, replay.sent = case, []
            with session_scope(name):
                callers[protocol](replay.base, case)
            if hasattr(inst, "flush"):
                inst.flush()
            spans = [span_record(s) for s in exporter.get_finished_spans()]
            record = {
                "instrumentation": ref[1],
                "version": version(ref[1]),
                "case": case,
                "sent": replay.sent,
                "spans": spans,
            }
            text = json.dumps(record, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
            (out / name / f"{case}.json").write_text(text)
    inst.uninstrument()
    replay.server.shutdown()


class LangfuseClient:
    """The Langfuse SDK in the place of an instrumentor: its client, exporting into
    `exporter` (no network; the replay server stands in for the Langfuse host)."""

    def __init__(self, base: str, exporter: Any) -> None:
        self.base, self.exporter, self.client = base, exporter, None

    def instrument(self, tracer_provider: Any) -> None:
        from langfuse import Langfuse

        self.client = Langfuse(public_key="pk-lf-reference", secret_key="sk-lf-reference",
                               base_url=self.base, tracer_provider=tracer_provider,
                               span_exporter=self.exporter, flush_at=1)

    def flush(self) -> None:
        self.client.flush()

    def uninstrument(self) -> None:
        self.client.shutdown()


def session_scope(name: str) -> Any:
    """OpenInference's and Langfuse's ways to give a span a session and a user; the
    others have none."""
    import contextlib

    if name == "langfuse-openai":
        from langfuse import propagate_attributes
        return propagate_attributes(session_id=SESSION_ID, user_id=USER_ID)
    if not name.startswith("openinference"):
        return contextlib.nullcontext()
    from openinference.instrumentation import using_attributes
    return using_attributes(session_id=SESSION_ID, user_id=USER_ID)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help="capture one instrumentation, in this process")
    parser.add_argument("--out", default=str(HERE), type=Path)
    args = parser.parse_args()
    if args.one:
        run_one(args.one, args.out)
        return 0
    failed = []
    for name, _, _, env in REFERENCES:
        print(f"capturing {name}", file=sys.stderr)
        python = sys.executable
        if name in VENVS:
            python = str(HERE.parent / VENVS[name] / "bin" / "python")
            if not os.path.exists(python):
                print(f"{name}: no {python} (see this script's docstring)", file=sys.stderr)
                failed.append(name)
                continue
        proc = subprocess.run([python, __file__, "--one", name, "--out", str(args.out)],
                              env={**os.environ, **env})
        if proc.returncode != 0:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
