"""The processes the protocol and agent e2e tests run, wired once.

    client ──► client tap ──► celgate ──► backend tap ──► celgate upstream
                                 └── OTLP/HTTP ──► OtlpSink

The client tap records what the client sent and what it got back; the backend tap what
the backend received and answered (`tap.py`). Comparing the two answers proves the client
got exactly what the backend sent; the backend tap's headers show which key arrived.
celgate has three backends, `provider: anthropic`, `openai` and `gemini`, each with its
own key, all pointing at the backend tap. Spans carry the jaeger preset plus `t.*`
fields written here from the `llm.*` variables, so the checks read the CEL context
itself, whatever a preset makes of it.

`direct=True` (E2E_DIRECT=1) leaves celgate out: client tap ──► backend tap ──► upstream.
Then only what the client got is checked (no spans, the client's own key arrives).
"""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from otlp_sink import OtlpSink  # noqa: E402
from tap import Recorded, Tap  # noqa: E402
from test_phoenix import Proc, clean_env  # noqa: E402

KEYS = {
    "anthropic": "sk-ant-backend-" + secrets.token_hex(8),
    "openai": "sk-openai-backend-" + secrets.token_hex(8),
    "gemini": "gm-backend-" + secrets.token_hex(8),
}
CLIENT_KEY = "sk-client-" + secrets.token_hex(8)

# Where each backend's baseUrl points, below the backend tap: the path the client sends
# (`/v1/messages`, `/v1/responses`, `/v1beta/models/...`) must reach the upstream as is.
BASE_PATH = {"anthropic": "/v1", "openai": "/v1", "gemini": "/v1beta"}
# Models each backend serves, as a real config names them (the CLIs' default models and
# the SDK tests' `*-e2e` ones match).
MODELS = {"anthropic": '["claude-*"]', "openai": '["gpt-*"]', "gemini": '["gemini-*"]'}

# The CEL context, one attribute per variable the checks read.
FIELDS = {
    "t.api": "llm.api",
    "t.operation": "llm.operation",
    "t.provider": "llm.provider",
    "t.model": "llm.requestModel",
    "t.response_model": "llm.responseModel",
    "t.response_id": "llm.responseId",
    "t.streaming": "llm.streaming",
    "t.input_tokens": "llm.inputTokens",
    "t.output_tokens": "llm.outputTokens",
    "t.total_tokens": "llm.totalTokens",
    "t.cache_read_tokens": "llm.cacheReadTokens",
    "t.reasoning_tokens": "llm.reasoningTokens",
    "t.system": "toJson(llm.systemInstructions)",
    "t.prompt": "toJson(llm.prompt)",
    "t.completion": "toJson(llm.completion)",
    "t.reasoning": "toJson(llm.reasoning)",
    "t.tool_calls": "toJson(llm.toolCalls)",
    "t.tools": "size(llm.tools)",
    "t.finish_reasons": "toJson(llm.finishReasons)",
    "t.session_id": "llm.sessionId",
    "t.user_id": "llm.userId",
    "t.ttft": "llm.timeToFirstToken",
    "t.path": "request.path",
    "t.status": "response.status",
    "t.error": "response.error",
}


def celgate_config(sink: str, backend: str) -> str:
    fields = "\n".join(f"        {k}: '{v}'" for k, v in FIELDS.items())
    backends = "\n".join(f"""  - name: {p}
    provider: {p}
    baseUrl: {backend}{BASE_PATH[p]}
    models: {MODELS[p]}
    apiKey: {{env: E2E_{p.upper()}_KEY}}""" for p in KEYS)
    return f"""listen: 127.0.0.1:0
admin: 127.0.0.1:0
config:
  tracing:
    preset: jaeger
    otlpEndpoint: {sink}
    otlpProtocol: http
    randomSampling: true
    clientSampling: true
    privacy: {{hideInputs: false, hideOutputs: false}}
    fields:
      add:
{fields}
backends:
{backends}
"""


class Stack:
    def __init__(self, celgate: str, logdir: Path, direct: bool = False) -> None:
        self.direct = direct
        self.logdir = logdir
        self.procs: list[Proc] = []
        self.upstream = self._start("upstream", [celgate, "upstream", "--listen", "127.0.0.1:0"],
                                    clean_env(), r"scripted upstream listening on (\S+)")
        self.backend = Tap("http://" + self.upstream)
        self.sink: Optional[OtlpSink] = None
        self.gateway: Optional[Proc] = None
        target = self.backend.url
        if not direct:
            self.sink = OtlpSink()
            path = logdir / "celgate.yaml"
            path.write_text(celgate_config(self.sink.endpoint, self.backend.url))
            env = clean_env(**{f"E2E_{p.upper()}_KEY": k for p, k in KEYS.items()})
            addr = self._start("celgate", [celgate, "run", "--config", str(path)], env,
                               r"proxy listening on (\S+)")
            self.gateway = self.procs[-1]
            target = "http://" + addr
        self.client = Tap(target)
        self.url = self.client.url

    def _start(self, name: str, argv: list[str], env: dict[str, str], line: str) -> str:
        proc = Proc(name, argv, env, self.logdir, wait_for=re.compile(line))
        self.procs.append(proc)
        return proc.wait_line(1, 60)[0].group(1)

    def take(self) -> tuple[list[Recorded], list[Recorded]]:
        """(client-side, backend-side) requests since the last take."""
        return self.client.take(), self.backend.take()

    def stop(self) -> list[str]:
        """Stops everything; the problems seen (a non-zero exit, an undecodable export)."""
        problems = []
        for proc in reversed(self.procs):
            code = proc.stop()
            if code != 0:
                problems.append(f"{proc.name} exited with {code}\n{proc.tail()}")
        self.client.close()
        self.backend.close()
        if self.sink:
            problems += [f"OTLP export not decodable: {e}" for e in self.sink.errors]
        return problems


def secrets_in(rec: Recorded) -> list[str]:
    """Which of our keys (backend or client) appear anywhere in a recorded request."""
    text = rec.path + "\n" + "\n".join(f"{k}: {v}" for k, v in rec.headers) + "\n" + \
        rec.body.decode("utf-8", "replace")
    found = [f"{p} backend key" for p, k in KEYS.items() if k in text]
    return found + (["the client's key"] if CLIENT_KEY in text else [])


def spans_with_secrets(spans: list[dict[str, Any]]) -> list[str]:
    out = []
    for s in spans:
        for k, v in s["attributes"].items():
            text = str(v)
            if CLIENT_KEY in text or any(key in text for key in KEYS.values()):
                out.append(f"span {s['name']!r} attribute {k} holds a key")
    return out
