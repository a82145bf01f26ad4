#!/usr/bin/env python3
"""End-to-end: official SDKs -> celgate (Phoenix preset) -> a real Arize Phoenix.

Starts `phoenix serve` (data in a temp dir, loopback, telemetry off), celgate's scripted
upstream, and for each OTLP transport (gRPC, HTTP/protobuf) one `celgate run` whose
spans go to its own Phoenix project (resource attribute `openinference.project.name`).
Drives traffic with the official `openai` Python SDK and, through `stream.mjs`, the
official `openai` npm package, and the other three protocols with the `anthropic` SDK
(Messages), the `openai` SDK (`responses.create`) and `google-genai` (generate_content);
then reads the spans back from Phoenix's REST API
(`GET /v1/projects/{name}/spans`), its GraphQL API (the attributes as Phoenix stored
them, the token counts it parsed) and `GET /v1/sessions/{id}`, and checks them against
what the SDKs saw.

Run it through `bash tests/e2e/run.sh` (which installs everything). Directly:
    CELGATE_BIN=target/debug/celgate tests/e2e/.venv/bin/python tests/e2e/test_phoenix.py
Environment: CELGATE_BIN (required), PHOENIX_BIN (default: `phoenix` beside this Python),
NODE_BIN (default `node`), E2E_KEEP_TMP=1 keeps the temp dir (logs, Phoenix's database).
Exit status 0 when every check passed, 1 otherwise; the last line is
`e2e: N passed, N failed` (one per transport x case).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import openai
from openai import OpenAI

HERE = Path(__file__).resolve().parent
MODEL = "gpt-4o-mini"
EMBEDDING_MODEL = "text-embedding-3-small"
UPSTREAM_KEY = "sk-scripted-e2e-" + secrets.token_hex(8)  # celgate's key for the upstream
CLIENT_KEY = "sk-client-e2e-" + secrets.token_hex(8)  # what the SDKs send; never forwarded
TRANSPORTS = ("grpc", "http")
SPAN_DEADLINE_S = 60.0
PHOENIX_START_DEADLINE_S = 240.0
TAG = re.compile(r"\[e2e:([a-z_]+):([a-z]+)\]")
ANSI = re.compile(r"\x1b\[[0-9;]*m")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a timezone",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"],
            },
        },
    },
]


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The parent's environment without anything that would steer OTel or Phoenix."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "OPENINFERENCE_", "PHOENIX_", "OPENAI_"))
    }
    env.update(extra)
    return env


class Proc:
    """A child process whose stderr is copied to a log file and scanned for a line."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path,
                 wait_for: Optional[re.Pattern[str]] = None) -> None:
        self.name = name
        self.stdout_path = logdir / f"{name}.stdout.log"
        self.stderr_path = logdir / f"{name}.stderr.log"
        self._stdout = open(self.stdout_path, "wb")
        self._wait_for = wait_for
        self.matches: list[re.Match[str]] = []
        self._matched = threading.Event()
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=self._stdout,
            stderr=subprocess.PIPE, start_new_session=True,
        )
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        with open(self.stderr_path, "wb") as out:
            for raw in iter(self.proc.stderr.readline, b""):
                out.write(raw)
                out.flush()
                if self._wait_for is not None:
                    line = ANSI.sub("", raw.decode("utf-8", "replace"))
                    m = self._wait_for.search(line)
                    if m:
                        self.matches.append(m)
                        self._matched.set()

    def wait_line(self, count: int, timeout: float) -> list[re.Match[str]]:
        deadline = time.monotonic() + timeout
        while len(self.matches) < count:
            if self.proc.poll() is not None:
                self._thread.join(2)
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before it "
                                   f"was ready\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s\n{self.tail()}")
            self._matched.wait(0.1)
            self._matched.clear()
        return self.matches

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code (None if killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self._close()
                return None
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        self._thread.join(5)
        self._stdout.close()

    def tail(self, lines: int = 25) -> str:
        out = []
        for path in (self.stderr_path, self.stdout_path):
            try:
                text = path.read_text("utf-8", "replace").splitlines()[-lines:]
            except OSError:
                continue
            if text:
                out.append(f"--- {path.name} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out)


# --------------------------------------------------------------------------------------
# Phoenix HTTP helpers
# --------------------------------------------------------------------------------------


class Phoenix:
    def __init__(self, port: int, grpc_port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.grpc_port = grpc_port

    def get(self, path: str, **query: Any) -> tuple[int, Any]:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            body, status = e.read(), e.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace")

    def graphql(self, query: str, variables: dict[str, Any]) -> Any:
        req = urllib.request.Request(
            self.base + "/graphql", method="POST",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.loads(r.read())
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/healthz", timeout=2) as r:
                if r.status != 200:
                    return False
        except (OSError, urllib.error.URLError):
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=2):
                return True
        except OSError:
            return False

    def spans(self, project: str) -> Optional[list[dict[str, Any]]]:
        """Every span of a project (following next_cursor), oldest first; None if the
        project does not exist (yet)."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            q: dict[str, Any] = {"limit": 1000, "sort": "id", "order": "asc"}
            if cursor:
                q["cursor"] = cursor
            status, body = self.get(f"/v1/projects/{urllib.parse.quote(project)}/spans", **q)
            if status == 404:
                return None
            if status != 200:
                raise RuntimeError(f"GET spans of {project}: HTTP {status}: {body}")
            out.extend(body["data"])
            cursor = body.get("next_cursor")
            if not cursor:
                return out

    def wait_spans(self, project: str, expected: int, deadline_s: float) -> tuple[list[dict], float]:
        """Phoenix inserts spans in the background: poll until `expected` are there, then
        poll a little longer to catch extras (duplicates)."""
        start = time.monotonic()
        spans: list[dict] = []
        while time.monotonic() - start < deadline_s:
            spans = self.spans(project) or []
            if len(spans) >= expected:
                break
            time.sleep(0.25)
        waited = time.monotonic() - start
        if len(spans) >= expected:
            time.sleep(1.0)
            spans = self.spans(project) or []
        return spans, waited


SPAN_GQL = """
query ($id: ID!) {
  node(id: $id) {
    ... on Span {
      name
      spanKind
      attributes
      tokenCountPrompt
      tokenCountCompletion
      tokenCountTotal
      project { name }
    }
  }
}
"""


# --------------------------------------------------------------------------------------
# Traffic: what each case sent and what the SDK got back
# --------------------------------------------------------------------------------------


@dataclass
class Call:
    case: str
    transport: str
    kind: str = "LLM"
    span_name: str = "ChatCompletion"
    model: str = MODEL
    messages: list[dict[str, Any]] = field(default_factory=list)
    reply: Optional[str] = None  # assembled assistant text
    tool_calls: list[dict[str, str]] = field(default_factory=list)  # id, name, arguments
    usage: Optional[dict[str, int]] = None
    params: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] = field(default_factory=list)
    session_id: Optional[str] = None
    traceparent: Optional[tuple[str, str]] = None  # trace id, parent span id (hex)
    embedding_texts: list[str] = field(default_factory=list)
    client: str = "python"
    # The protocol (llm.api: chat also for embeddings, messages, responses,
    # generate_content) and what OpenInference calls its provider and system.
    api: str = "chat"
    provider: str = "openai"
    system: Optional[str] = "openai"  # llm.system; google-genai's instrumentation writes none
    output_role: str = "assistant"  # Gemini's is `model`
    # llm.token_count.{prompt,completion}_details.* the SDK's usage reported
    token_details: dict[str, int] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return f"[e2e:{self.case}:{self.transport}]"


def usage_dict(u: Any) -> Optional[dict[str, int]]:
    if u is None:
        return None
    return {"prompt": u.prompt_tokens, "completion": getattr(u, "completion_tokens", 0) or 0,
            "total": u.total_tokens}


def drive(base_url: str, transport: str, node_bin: Optional[str], session_id: str,
          session_scope: Callable[[str], Any] = lambda _sid: contextlib.nullcontext()
          ) -> list[Call]:
    """Make every call once through `base_url`. `node_bin=None` skips the npm client;
    `session_scope(session_id)` wraps the session call (the reference pass uses
    OpenInference's `using_session`, since its instrumentation does not read headers)."""
    client = OpenAI(base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
    calls: list[Call] = []

    def expect(cond: bool, what: str) -> None:
        if not cond:
            raise AssertionError(f"[{transport}] SDK saw: {what}")

    # 1. non-streaming chat with parameters
    c = Call("chat", transport, params={"temperature": 0.2, "max_tokens": 64})
    c.messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": f"{c.tag} What is the capital of France?"},
    ]
    r = client.chat.completions.create(model=MODEL, messages=c.messages, **c.params)
    c.reply, c.usage = r.choices[0].message.content, usage_dict(r.usage)
    expect(c.reply == f"Scripted reply to: {c.messages[-1]['content']}", f"chat reply {c.reply!r}")
    calls.append(c)

    # 2. streaming chat with usage
    c = Call("stream", transport)
    c.messages = [{"role": "user", "content": f"{c.tag} Count to three, please."}]
    text, chunks = "", 0
    for chunk in client.chat.completions.create(
        model=MODEL, messages=c.messages, stream=True, stream_options={"include_usage": True}
    ):
        chunks += 1
        if chunk.usage:
            c.usage = usage_dict(chunk.usage)
        for ch in chunk.choices:
            text += ch.delta.content or ""
    c.reply = text
    expect(text == f"Scripted reply to: {c.messages[-1]['content']}", f"stream text {text!r}")
    expect(c.usage is not None, f"no usage chunk in {chunks} chunks")
    calls.append(c)

    # 3. streaming chat with tools: two parallel tool calls, arguments in fragments
    c = Call("tools_stream", transport, tools=TOOLS)
    c.messages = [{"role": "user", "content": f"{c.tag} Weather in Paris and the time there?"}]
    acc: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model=MODEL, messages=c.messages, tools=TOOLS, stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage:
            c.usage = usage_dict(chunk.usage)
        for ch in chunk.choices:
            finish = ch.finish_reason or finish
            for tc in ch.delta.tool_calls or []:
                slot = acc.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
    c.tool_calls = [acc[i] for i in sorted(acc)]
    expect([t["name"] for t in c.tool_calls] == ["get_weather", "get_time"],
           f"tool calls {c.tool_calls}")
    for t in c.tool_calls:
        json.loads(t["arguments"])
    expect(finish == "tool_calls", f"finish_reason {finish!r}")
    calls.append(c)
    streamed_calls = c.tool_calls

    # 4. the tool results go back: assistant tool_calls and tool messages in the prompt
    c = Call("tool_result", transport, tools=TOOLS)
    c.messages = [
        {"role": "user", "content": f"{c.tag} Weather in Paris and the time there?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": t["id"], "type": "function",
             "function": {"name": t["name"], "arguments": t["arguments"]}}
            for t in streamed_calls]},
        {"role": "tool", "tool_call_id": streamed_calls[0]["id"], "content": "18 C, cloudy"},
        {"role": "tool", "tool_call_id": streamed_calls[1]["id"], "content": "14:05 CET"},
    ]
    r = client.chat.completions.create(model=MODEL, messages=c.messages, tools=TOOLS)
    c.reply, c.usage = r.choices[0].message.content, usage_dict(r.usage)
    expect(bool(c.reply) and not r.choices[0].message.tool_calls, f"tool result reply {r}")
    calls.append(c)

    # 5. a session (x-session-id as a client default header) inside a caller's trace
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    c = Call("session", transport, session_id=session_id, traceparent=(trace_id, parent_id))
    c.messages = [{"role": "user", "content": f"{c.tag} Remember that my name is Ada."}]
    session_client = OpenAI(base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=30,
                            default_headers={"x-session-id": session_id})
    with session_scope(session_id):
        r = session_client.chat.completions.create(
            model=MODEL, messages=c.messages,
            extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
    c.reply, c.usage = r.choices[0].message.content, usage_dict(r.usage)
    calls.append(c)

    # 6. embeddings (the SDK asks for base64 by default)
    c = Call("embeddings", transport, kind="EMBEDDING", span_name="CreateEmbeddings",
             model=EMBEDDING_MODEL)
    c.embedding_texts = [f"{c.tag} alpha beta", "gamma delta"]
    r = client.embeddings.create(model=EMBEDDING_MODEL, input=c.embedding_texts)
    expect(len(r.data) == 2 and len(r.data[0].embedding) > 0, f"embeddings {r}")
    c.usage = usage_dict(r.usage)
    calls.append(c)

    # 7. the official openai npm package, streaming
    if node_bin is None:
        return calls
    c = Call("node", transport, client="node")
    c.messages = [{"role": "user", "content": f"{c.tag} Say hello from Node."}]
    p = subprocess.run([node_bin, str(HERE / "stream.mjs"), base_url, c.messages[0]["content"]],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    if p.returncode != 0:
        raise AssertionError(f"[{transport}] node stream.mjs exited {p.returncode}\n"
                             f"{p.stdout}\n{p.stderr}")
    lines = p.stdout.splitlines()
    c.reply = lines[0] if lines else ""
    info = json.loads(lines[1]) if len(lines) > 1 else {}
    expect(c.reply == f"Scripted reply to: {c.messages[0]['content']}",
           f"node printed {p.stdout!r}")
    u = info.get("usage") or None
    c.usage = u and {"prompt": u["prompt_tokens"], "completion": u["completion_tokens"],
                     "total": u["total_tokens"]}
    calls.append(c)
    return calls


# --------------------------------------------------------------------------------------
# The other protocols: Anthropic Messages, OpenAI Responses, Gemini generateContent
# --------------------------------------------------------------------------------------
# Each through its own official SDK, each call in a session of its own (`x-session-id`
# for celgate, OpenInference's `using_session` for the reference). The scripted upstream
# answers a tool call only when the last user text says `call <tool> {json}`.

ANTHROPIC_MODEL = "claude-e2e"
RESPONSES_MODEL = "gpt-e2e"
GEMINI_MODEL = "gemini-e2e"
SYSTEM = "You are a terse assistant."
CACHED = "Cached context block."  # a system block with cache_control: 3 cached words
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city"],
}
CALL_ARGS = {"city": "Paris", "unit": "c"}
ANTHROPIC_TOOL = {"name": "get_weather", "description": "Weather of a city",
                  "input_schema": WEATHER_SCHEMA}
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "description": "Weather of a city",
                  "parameters": WEATHER_SCHEMA, "strict": False}
# The declaration as google-genai 2.x puts it on the wire (`parameters_json_schema` in
# snake case, which the API reads as it reads `parametersJsonSchema`): what celgate's
# span holds is the tool as sent.
GEMINI_TOOL = {"name": "get_weather", "description": "Weather of a city",
               "parameters_json_schema": WEATHER_SCHEMA}


def ask_tool(tag: str) -> str:
    return f"{tag} What is the weather? call get_weather {json.dumps(CALL_ARGS)}"


def protocol_call(case: str, transport: str, api: str, session: str, **kw: Any) -> Call:
    names = {"messages": ("messages.create", ANTHROPIC_MODEL, "anthropic", "anthropic"),
             "responses": ("Response", RESPONSES_MODEL, "openai", "openai"),
             "generate_content": ("GenerateContent", GEMINI_MODEL, "google", None)}
    span_name, model, provider, system = names[api]
    return Call(case, transport, span_name=span_name, model=model, api=api, provider=provider,
                system=system, output_role="model" if api == "generate_content" else "assistant",
                session_id=f"{session}-{case}", **kw)


def drive_protocols(root: str, transport: str, session: str,
                    session_scope: Callable[[str], Any]) -> list[Call]:
    """Messages, Responses and generateContent calls through `root` (celgate's or the
    upstream's address, no path)."""
    def expect(cond: bool, what: str) -> None:
        if not cond:
            raise AssertionError(f"[{transport}] SDK saw: {what}")

    calls = drive_messages(root, transport, session, session_scope, expect)
    calls += drive_responses(root, transport, session, session_scope, expect)
    calls += drive_gemini(root, transport, session, session_scope, expect)
    return calls


def read_anthropic(c: Call, blocks: list[Any], usage: dict[str, int]) -> None:
    """The answer's text, tool uses and usage into `c` (usage: input, output, cache_read,
    cache_write as Anthropic counts them: input leaves the cached tokens out)."""
    texts = [b["text"] for b in blocks if b["type"] == "text"]
    c.reply = "".join(texts) if texts else None
    c.tool_calls = [{"id": b["id"], "name": b["name"], "arguments": b["arguments"]}
                    for b in blocks if b["type"] == "tool_use"]
    prompt = usage["input"] + usage["cache_read"] + usage["cache_write"]
    c.usage = {"prompt": prompt, "completion": usage["output"],
               "total": prompt + usage["output"]}
    c.token_details = {"prompt_details.cache_read": usage["cache_read"],
                       "prompt_details.cache_write": usage["cache_write"]}


def anthropic_usage(u: Any, into: dict[str, int]) -> None:
    for key, attr in (("input", "input_tokens"), ("output", "output_tokens"),
                      ("cache_read", "cache_read_input_tokens"),
                      ("cache_write", "cache_creation_input_tokens")):
        v = getattr(u, attr, None)
        if v is not None or key not in into:
            into[key] = v or 0


def anthropic_message(msg: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    blocks = [{"type": b.type, "text": getattr(b, "text", ""), "id": getattr(b, "id", None),
               "name": getattr(b, "name", None), "arguments": json.dumps(getattr(b, "input", {}))}
              for b in msg.content]
    usage: dict[str, int] = {}
    anthropic_usage(msg.usage, usage)
    return blocks, usage


def anthropic_stream(events: Any) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Assemble a Messages event stream as an application would, without the SDK's
    `stream()` helper (the reference instrumentation names that span otherwise)."""
    blocks: dict[int, dict[str, Any]] = {}
    usage: dict[str, int] = {}
    for e in events:
        if e.type == "message_start":
            anthropic_usage(e.message.usage, usage)
        elif e.type == "content_block_start":
            b = e.content_block
            blocks[e.index] = {"type": b.type, "text": "", "id": getattr(b, "id", None),
                               "name": getattr(b, "name", None), "arguments": ""}
        elif e.type == "content_block_delta" and e.delta.type == "text_delta":
            blocks[e.index]["text"] += e.delta.text
        elif e.type == "content_block_delta" and e.delta.type == "input_json_delta":
            blocks[e.index]["arguments"] += e.delta.partial_json
        elif e.type == "message_delta":
            anthropic_usage(e.usage, usage)  # cumulative
    return [blocks[i] for i in sorted(blocks)], usage


def drive_messages(root: str, transport: str, session: str, scope: Callable[[str], Any],
                   expect: Callable[[bool, str], None]) -> list[Call]:
    import anthropic

    def client(c: Call) -> Any:
        return anthropic.Anthropic(base_url=root, api_key=CLIENT_KEY, max_retries=0,
                                   timeout=30, default_headers={"x-session-id": c.session_id})

    calls = []
    # 1. create: two system blocks, the second cached
    c = protocol_call("messages_create", transport, "messages", session,
                      params={"max_tokens": 64, "temperature": 0.5})
    user = f"{c.tag} Hello from the anthropic SDK"
    c.messages = [{"role": "system", "content": f"{SYSTEM}\n{CACHED}"},
                  {"role": "user", "content": user}]
    with scope(c.session_id):
        msg = client(c).messages.create(
            model=c.model, max_tokens=64, extra_body={"temperature": 0.5},  # the SDK's way
            system=[{"type": "text", "text": SYSTEM},
                    {"type": "text", "text": CACHED, "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": user}])
    read_anthropic(c, *anthropic_message(msg))
    expect(c.reply == f"Scripted reply to: {user}", f"messages reply {c.reply!r}")
    expect(c.token_details["prompt_details.cache_read"] == 3,
           f"cache_read_input_tokens {c.token_details} (3 cached words)")
    calls.append(c)

    # 2. stream
    c = protocol_call("messages_stream", transport, "messages", session,
                      params={"max_tokens": 64})
    user = f"{c.tag} Stream a few words"
    c.messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    with scope(c.session_id):
        read_anthropic(c, *anthropic_stream(client(c).messages.create(
            model=c.model, max_tokens=64, system=SYSTEM, stream=True,
            messages=[{"role": "user", "content": user}])))
    expect(c.reply == f"Scripted reply to: {user}", f"messages stream {c.reply!r}")
    calls.append(c)

    # 3. tool use, streamed (arguments in input_json_delta fragments)
    c = protocol_call("messages_tool_use", transport, "messages", session,
                      tools=[ANTHROPIC_TOOL])
    c.messages = [{"role": "user", "content": ask_tool(c.tag)}]
    with scope(c.session_id):
        read_anthropic(c, *anthropic_stream(client(c).messages.create(
            model=c.model, max_tokens=64, tools=[ANTHROPIC_TOOL], stream=True,
            messages=c.messages)))
    expect([(t["name"], json.loads(t["arguments"])) for t in c.tool_calls]
           == [("get_weather", CALL_ARGS)], f"tool uses {c.tool_calls}")
    calls.append(c)
    tool_use = c.tool_calls[0]

    # 4. the tool result goes back: tool_use in the history, tool_result from the user
    c = protocol_call("messages_tool_result", transport, "messages", session,
                      tools=[ANTHROPIC_TOOL])
    ask = ask_tool(c.tag)
    c.messages = [
        {"role": "user", "content": ask},
        {"role": "assistant", "tool_calls": [{"id": tool_use["id"], "function": {
            "name": "get_weather", "arguments": tool_use["arguments"]}}]},
        {"role": "tool", "tool_call_id": tool_use["id"], "content": "Sunny, 21 C"},
    ]
    with scope(c.session_id):
        msg = client(c).messages.create(
            model=c.model, max_tokens=64, tools=[ANTHROPIC_TOOL], messages=[
                {"role": "user", "content": ask},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": tool_use["id"], "name": "get_weather",
                     "input": json.loads(tool_use["arguments"])}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": tool_use["id"],
                     "content": "Sunny, 21 C"}]}])
    read_anthropic(c, *anthropic_message(msg))
    expect(c.reply == "Scripted reply to tool result: Sunny, 21 C", f"reply {c.reply!r}")
    calls.append(c)
    return calls


def read_response(c: Call, resp: Any) -> None:
    texts, c.tool_calls = [], []
    for item in resp.output:
        if item.type == "message":
            texts += [p.text for p in item.content if p.type == "output_text"]
        elif item.type == "function_call":
            c.tool_calls.append({"id": item.call_id, "name": item.name,
                                 "arguments": item.arguments})
    c.reply = "".join(texts) if texts else None
    u = resp.usage
    c.usage = {"prompt": u.input_tokens, "completion": u.output_tokens,
               "total": u.total_tokens}
    c.token_details = {"prompt_details.cache_read": u.input_tokens_details.cached_tokens,
                       "completion_details.reasoning": u.output_tokens_details.reasoning_tokens}


def completed(events: list[Any], expect: Callable[[bool, str], None]) -> Any:
    done = [e.response for e in events if e.type == "response.completed"]
    expect(len(done) == 1, f"{len(done)} response.completed events")
    return done[0]


def drive_responses(root: str, transport: str, session: str, scope: Callable[[str], Any],
                    expect: Callable[[bool, str], None]) -> list[Call]:
    def client(c: Call) -> OpenAI:
        return OpenAI(base_url=f"{root}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30,
                      default_headers={"x-session-id": c.session_id})

    calls = []
    # 5. JSON: instructions and a string input; a prompt_cache_key (the upstream then
    # reports half the input as cached)
    c = protocol_call("responses_create", transport, "responses", session,
                      params={"temperature": 0.5, "max_output_tokens": 64})
    user = f"{c.tag} Hello from the openai SDK"
    c.messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    with scope(c.session_id):
        resp = client(c).responses.create(model=c.model, instructions=SYSTEM, input=user,
                                          temperature=0.5, max_output_tokens=64,
                                          prompt_cache_key="e2e")
    read_response(c, resp)
    expect(resp.output_text == c.reply == f"Scripted reply to: {user}", f"reply {c.reply!r}")
    expect(c.token_details["prompt_details.cache_read"] == c.usage["prompt"] // 2,
           f"cached_tokens {c.token_details} of {c.usage}")
    calls.append(c)

    # 6. stream, a message input
    c = protocol_call("responses_stream", transport, "responses", session)
    user = f"{c.tag} Stream please"
    c.messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    with scope(c.session_id):
        events = list(client(c).responses.create(
            model=c.model, instructions=SYSTEM, stream=True,
            input=[{"role": "user", "content": user}]))
    read_response(c, completed(events, expect))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    expect(deltas == c.reply == f"Scripted reply to: {user}", f"stream {deltas!r}")
    calls.append(c)

    # 7. function call, streamed
    c = protocol_call("responses_function_call", transport, "responses", session,
                      tools=[RESPONSES_TOOL])
    c.messages = [{"role": "user", "content": ask_tool(c.tag)}]
    with scope(c.session_id):
        events = list(client(c).responses.create(
            model=c.model, input=ask_tool(c.tag), tools=[RESPONSES_TOOL], stream=True))
    read_response(c, completed(events, expect))
    expect([(t["name"], json.loads(t["arguments"])) for t in c.tool_calls]
           == [("get_weather", CALL_ARGS)], f"function calls {c.tool_calls}")
    calls.append(c)
    return calls


def read_gemini(c: Call, chunks: list[Any]) -> None:
    texts, c.tool_calls = [], []
    for chunk in chunks:
        for cand in chunk.candidates or []:
            for part in (cand.content.parts if cand.content else None) or []:
                if part.text and not part.thought:
                    texts.append(part.text)
                elif part.function_call:
                    fc = part.function_call
                    c.tool_calls.append({"id": fc.id, "name": fc.name,
                                         "arguments": json.dumps(fc.args)})
    c.reply = "".join(texts) if texts else None
    u = chunks[-1].usage_metadata
    c.usage = {"prompt": u.prompt_token_count,
               "completion": (u.candidates_token_count or 0) + (u.thoughts_token_count or 0),
               "total": u.total_token_count}
    if u.cached_content_token_count:
        c.token_details = {"prompt_details.cache_read": u.cached_content_token_count}


def drive_gemini(root: str, transport: str, session: str, scope: Callable[[str], Any],
                 expect: Callable[[bool, str], None]) -> list[Call]:
    from google import genai
    from google.genai import types as gt

    def client(c: Call) -> Any:
        return genai.Client(api_key=CLIENT_KEY, http_options=gt.HttpOptions(
            base_url=root, api_version="v1beta", timeout=30_000,
            headers={"x-session-id": c.session_id},
            retry_options=gt.HttpRetryOptions(attempts=1)))

    calls = []
    # 8. generate_content with a system instruction and cached content (the upstream
    # then reports half the prompt as cached)
    c = protocol_call("gemini_generate", transport, "generate_content", session,
                      params={"temperature": 0.5})
    user = f"{c.tag} Hello from google-genai"
    c.messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    cl = client(c)  # held: a dropped client closes its connections
    with scope(c.session_id):
        resp = cl.models.generate_content(
            model=c.model, contents=user, config=gt.GenerateContentConfig(
                system_instruction=SYSTEM, temperature=0.5, cached_content="cachedContents/e2e"))
    read_gemini(c, [resp])
    expect(c.reply == f"Scripted reply to: {user}", f"reply {c.reply!r}")
    expect(c.token_details.get("prompt_details.cache_read") == c.usage["prompt"] // 2,
           f"cachedContentTokenCount {c.token_details} of {c.usage}")
    calls.append(c)

    # 9. stream
    c = protocol_call("gemini_stream", transport, "generate_content", session)
    c.span_name = "GenerateContentStream"
    user = f"{c.tag} Stream from gemini"
    c.messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    cl = client(c)
    with scope(c.session_id):
        chunks = list(cl.models.generate_content_stream(
            model=c.model, contents=user, config=gt.GenerateContentConfig(
                system_instruction=SYSTEM)))
    read_gemini(c, chunks)
    expect(len(chunks) > 1 and c.reply == f"Scripted reply to: {user}",
           f"{len(chunks)} chunks, text {c.reply!r}")
    calls.append(c)

    # 10. function call, streamed
    c = protocol_call("gemini_function_call", transport, "generate_content", session,
                      tools=[GEMINI_TOOL])
    c.span_name = "GenerateContentStream"
    c.messages = [{"role": "user", "content": ask_tool(c.tag)}]
    cl = client(c)
    with scope(c.session_id):
        chunks = list(cl.models.generate_content_stream(
            model=c.model, contents=ask_tool(c.tag), config=gt.GenerateContentConfig(
                tools=[gt.Tool(function_declarations=[gt.FunctionDeclaration(
                    name="get_weather", description="Weather of a city",
                    parameters_json_schema=WEATHER_SCHEMA)])],
                automatic_function_calling=gt.AutomaticFunctionCallingConfig(disable=True))))
    read_gemini(c, chunks)
    expect([(t["name"], json.loads(t["arguments"])) for t in c.tool_calls]
           == [("get_weather", CALL_ARGS)], f"function calls {c.tool_calls}")
    calls.append(c)
    return calls


# --------------------------------------------------------------------------------------
# Checks on what Phoenix stored
# --------------------------------------------------------------------------------------


class Checker:
    """Collects failures for one span: what was expected, what was found."""

    def __init__(self, label: str, attrs: dict[str, Any]) -> None:
        self.label = label
        self.attrs = attrs
        self.failures: list[str] = []

    def fail(self, msg: str) -> None:
        self.failures.append(msg)

    def eq(self, key: str, want: Any) -> None:
        if key not in self.attrs:
            self.fail(f"missing `{key}` (want {want!r})")
        elif self.attrs[key] != want:
            self.fail(f"`{key}` = {self.attrs[key]!r}, want {want!r}")

    def absent(self, key: str) -> None:
        if key in self.attrs:
            self.fail(f"`{key}` should be absent, found {self.attrs[key]!r}")

    def integer(self, key: str, want: Optional[int]) -> None:
        v = self.attrs.get(key)
        if key not in self.attrs:
            self.fail(f"missing `{key}` (want int {want})")
        elif type(v) is not int:
            self.fail(f"`{key}` = {v!r} is a {type(v).__name__}, want an integer")
        elif want is not None and v != want:
            self.fail(f"`{key}` = {v}, want {want} (what the SDK got in usage)")

    def same_json(self, key: str, want: str) -> None:
        """`key` holds JSON text equal, as JSON, to `want` (protocols differ in spacing)."""
        got = self.json_of(key)
        if key in self.attrs and got != json.loads(want):
            self.fail(f"`{key}` = {self.attrs[key]!r}, want {want!r} (as JSON)")

    def json_of(self, key: str) -> Any:
        v = self.attrs.get(key)
        if not isinstance(v, str):
            self.fail(f"`{key}` = {v!r}, want a JSON string")
            return None
        try:
            return json.loads(v)
        except ValueError as e:
            self.fail(f"`{key}` is not valid JSON ({e}): {v[:200]!r}")
            return None


def check_messages(k: Checker, prefix: str, messages: list[dict[str, Any]]) -> None:
    for i, m in enumerate(messages):
        base = f"{prefix}.{i}.message"
        k.eq(f"{base}.role", m["role"])
        if m.get("content") is not None:
            k.eq(f"{base}.content", m["content"])
        if m.get("tool_call_id"):
            k.eq(f"{base}.tool_call_id", m["tool_call_id"])
        for j, tc in enumerate(m.get("tool_calls") or []):
            tb = f"{base}.tool_calls.{j}.tool_call"
            k.eq(f"{tb}.id", tc["id"])
            k.eq(f"{tb}.function.name", tc["function"]["name"])
            k.same_json(f"{tb}.function.arguments", tc["function"]["arguments"])
    extra = f"{prefix}.{len(messages)}.message.role"
    if extra in k.attrs:
        k.fail(f"more messages than sent: found `{extra}`")


def check_span(span: dict[str, Any], call: Call, project: str, stored: dict[str, Any],
               session_ok: Callable[[str], Optional[str]]) -> list[str]:
    attrs = span.get("attributes") or {}
    k = Checker(call.tag, attrs)
    if span.get("span_kind") != call.kind:
        k.fail(f"span kind (`openinference.span.kind`) = {span.get('span_kind')!r}, "
               f"want {call.kind!r}")
    if span.get("name") != call.span_name:
        k.fail(f"span name = {span.get('name')!r}, want {call.span_name!r}")
    if span.get("status_code") == "ERROR":
        k.fail(f"status ERROR: {span.get('status_message')!r}")

    # secrets never reach a span
    for key, v in attrs.items():
        if isinstance(v, str) and (UPSTREAM_KEY in v or CLIENT_KEY in v):
            k.fail(f"`{key}` contains an API key")

    k.eq("llm.provider", call.provider)
    if call.system is None:
        k.absent("llm.system")
    else:
        k.eq("llm.system", call.system)
    if call.kind == "LLM":
        k.eq("llm.model_name", call.model)
        check_messages(k, "llm.input_messages", call.messages)
        k.eq("llm.output_messages.0.message.role", call.output_role)
        if call.reply is not None:
            k.eq("llm.output_messages.0.message.content", call.reply)
        for j, tc in enumerate(call.tool_calls):
            tb = f"llm.output_messages.0.message.tool_calls.{j}.tool_call"
            if tc["id"]:  # a Gemini function call may have none
                k.eq(f"{tb}.id", tc["id"])
            k.eq(f"{tb}.function.name", tc["name"])
            k.same_json(f"{tb}.function.arguments", tc["arguments"])
        if call.tool_calls:
            k.absent(f"llm.output_messages.0.message.tool_calls.{len(call.tool_calls)}"
                     ".tool_call.function.name")
        k.absent("llm.output_messages.1.message.role")
        for i, t in enumerate(call.tools):
            schema = k.json_of(f"llm.tools.{i}.tool.json_schema")
            if schema is not None and schema != t:
                k.fail(f"`llm.tools.{i}.tool.json_schema` = {schema}, want {t}")
        params = k.json_of("llm.invocation_parameters")
        if isinstance(params, dict):
            for pk, pv in call.params.items():
                if params.get(pk) != pv:
                    k.fail(f"`llm.invocation_parameters`.{pk} = {params.get(pk)!r}, want {pv!r}")
    else:  # EMBEDDING
        k.eq("embedding.model_name", call.model)
        k.absent("llm.model_name")
        for i, text in enumerate(call.embedding_texts):
            k.eq(f"embedding.embeddings.{i}.embedding.text", text)

    # token counts: integers, equal to what the SDK got
    u = call.usage or {}
    k.integer("llm.token_count.prompt", u.get("prompt"))
    if call.kind == "LLM":
        k.integer("llm.token_count.completion", u.get("completion"))
    k.integer("llm.token_count.total", u.get("total"))
    for detail, want in call.token_details.items():
        k.integer(f"llm.token_count.{detail}", want)

    # raw input/output, with mime types Phoenix renders by
    body = k.json_of("input.value")
    if call.api == "generate_content":
        pass  # Gemini names the model in the path
    elif isinstance(body, dict) and body.get("model") != call.model:
        k.fail(f"`input.value` model = {body.get('model')!r}, want {call.model!r}")
    k.eq("input.mime_type", "application/json")
    if call.kind == "EMBEDDING":
        pass  # celgate keeps embedding vectors out of traces: no response body (by design)
    elif "output.value" not in attrs:
        k.fail("missing `output.value`")
    elif attrs.get("output.mime_type") == "application/json":
        k.json_of("output.value")

    # session
    if call.session_id:
        k.eq("session.id", call.session_id)
        problem = session_ok(project, call.session_id)
        if problem:
            k.fail(problem)
    else:
        k.absent("session.id")

    # caller's trace context
    if call.traceparent:
        trace_id, parent_id = call.traceparent
        if span["context"]["trace_id"] != trace_id:
            k.fail(f"trace id {span['context']['trace_id']}, want the caller's {trace_id}")
        if span.get("parent_id") != parent_id:
            k.fail(f"parent span id {span.get('parent_id')!r}, want the caller's {parent_id}")

    # What Phoenix stored (GraphQL): indexed keys unflattened into lists -- the form its
    # UI reads -- and the token counts it parsed into its own columns.
    if stored:
        if stored.get("spanKind") != call.kind.lower():
            k.fail(f"GraphQL spanKind = {stored.get('spanKind')!r}, want {call.kind.lower()!r}")
        if (stored.get("project") or {}).get("name") != project:
            k.fail(f"GraphQL project = {stored.get('project')}, want {project}")
        try:
            tree = json.loads(stored["attributes"])
        except (KeyError, TypeError, ValueError) as e:
            k.fail(f"GraphQL attributes unreadable: {e}")
            tree = {}
        if call.kind == "LLM":
            ins = (tree.get("llm") or {}).get("input_messages")
            outs = (tree.get("llm") or {}).get("output_messages")
            if not (isinstance(ins, list) and len(ins) == len(call.messages)):
                k.fail(f"Phoenix did not parse llm.input_messages into a list of "
                       f"{len(call.messages)}: {json.dumps(ins)[:300]}")
            if not (isinstance(outs, list) and len(outs) == 1):
                k.fail(f"Phoenix did not parse llm.output_messages into a list: "
                       f"{json.dumps(outs)[:300]}")
            elif call.tool_calls:
                tcs = ((outs[0] or {}).get("message") or {}).get("tool_calls")
                if not (isinstance(tcs, list) and len(tcs) == len(call.tool_calls)):
                    k.fail(f"Phoenix did not parse the output tool_calls into a list: "
                           f"{json.dumps(tcs)[:300]}")
        for gql, key in (("tokenCountPrompt", "prompt"), ("tokenCountCompletion", "completion"),
                         ("tokenCountTotal", "total")):
            want = u.get(key)
            if call.kind != "LLM":
                break  # Phoenix fills its token-count columns for LLM spans only
            if want is not None and stored.get(gql) != want:
                k.fail(f"Phoenix's {gql} = {stored.get(gql)!r}, want {want}")
    return k.failures


def span_tag(span: dict[str, Any]) -> Optional[tuple[str, str]]:
    attrs = span.get("attributes") or {}
    candidates = []
    i = 0
    while f"llm.input_messages.{i}.message.role" in attrs:
        if attrs[f"llm.input_messages.{i}.message.role"] == "user":
            candidates.append(attrs.get(f"llm.input_messages.{i}.message.content"))
        i += 1
    candidates = candidates[-1:] + [attrs.get("embedding.embeddings.0.embedding.text"),
                                    attrs.get("input.value")]
    for text in candidates:
        if isinstance(text, str):
            found = TAG.findall(text)
            if found:
                return found[0]
    return None


def describe(span: dict[str, Any], keys: int = 60) -> str:
    attrs = span.get("attributes") or {}
    lines = [f"    name={span.get('name')!r} span_kind={span.get('span_kind')!r} "
             f"status={span.get('status_code')!r} trace={span.get('context', {}).get('trace_id')}"]
    for key in sorted(attrs)[:keys]:
        v = attrs[key]
        s = json.dumps(v) if not isinstance(v, str) else repr(v)
        lines.append(f"    {key} = {s[:160]}")
    if len(attrs) > keys:
        lines.append(f"    ... {len(attrs) - keys} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# The yardstick: the official OpenInference instrumentation on the same calls
# --------------------------------------------------------------------------------------

REF_PROJECT = "openinference-reference"
REFERENCE_DISTS = ("openinference-instrumentation-openai",
                   "openinference-instrumentation-anthropic",
                   "openinference-instrumentation-google-genai")
# E2E_REFERENCE=strict (default): a gap is a failure; report: gaps are printed as notes;
# off: no reference pass.
REFERENCE_MODE = os.environ.get("E2E_REFERENCE", "strict")

# Where celgate's span differs from the official instrumentation's on purpose:
# (case prefix, MISSING = a key the reference has and celgate's span lacks, or VALUE =
# a key both have with other values, key pattern, why). A case prefix names one call
# or, as `messages_`, `responses_`, `gemini_`, a protocol; None applies to every call.
# A shortcoming still to fix would be listed here marked "KNOWN GAP", so that any *new*
# gap still fails the run; none is left. tests/reference_spans.rs holds the same
# differences, found offline on the captured reference spans.
MISSING, VALUE = "missing", "value"
INTENDED_GAPS: list[tuple[str | None, str, re.Pattern[str], str]] = [
    ("embeddings", MISSING, re.compile(r"embedding\.embeddings\.\d+\.embedding\.vector$"),
     "embedding vectors are kept out of traces"),
    ("embeddings", MISSING, re.compile(r"output\.(value|mime_type)$"),
     "no response body for embeddings (it is the vectors)"),
    ("messages_create", MISSING, re.compile(r"^llm\.input_messages\.0\.message\.contents\."),
     "the two system blocks are one system message's `content`, joined by a newline "
     "(the prompt vocabulary every protocol shares); the reference writes each block as "
     "a `contents` part"),
    ("messages_", MISSING, re.compile(r"^llm\.output_messages\.0\.message\.contents\."),
     "the answer's text is the message's `content` and its tool uses are `tool_calls` "
     "(which the reference writes too); the reference repeats each block as a "
     "`contents` part"),
    ("messages_tool_result", MISSING,
     re.compile(r"^llm\.input_messages\.1\.message\.contents\."),
     "the history's tool_use is the assistant message's `tool_calls` (which the "
     "reference writes too); the reference repeats it as a `contents` part"),
    ("responses_", MISSING, re.compile(r"^llm\.output_messages\.0\.message\.contents\."),
     "one message per choice with its text as `content`; the reference writes each "
     "output item's parts as `contents`"),
    ("responses_", VALUE, re.compile(r"^llm\.tools\.\d+\.tool\.json_schema$"),
     "the tool as sent; the reference dumps the SDK's model of it (nulls for every "
     "field the caller left out)"),
    ("gemini_", VALUE, re.compile(r"^llm\.tools\.\d+\.tool\.json_schema$"),
     "the declaration as sent (`parameters_json_schema`); the reference rewrites the "
     "SDK's model of it (`parameters`)"),
]


def reference_pass(phoenix: Phoenix, upstream: str) -> tuple[dict[str, dict], list[Call]]:
    """The same calls straight to the upstream, traced in-process by
    openinference-instrumentation-openai (the version Phoenix pins), -anthropic and
    -google-genai, exported over OTLP/HTTP to Phoenix's project REF_PROJECT."""
    from openinference.instrumentation import using_session
    from openinference.instrumentation.anthropic import AnthropicInstrumentor
    from openinference.instrumentation.google_genai import GoogleGenAIInstrumentor
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tp = TracerProvider(resource=Resource.create({"openinference.project.name": REF_PROJECT}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(
        endpoint=f"{phoenix.base}/v1/traces", timeout=10)))
    instrumentors = [OpenAIInstrumentor(), AnthropicInstrumentor(), GoogleGenAIInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=tp)
    session = f"e2e-session-ref-{secrets.token_hex(4)}"
    try:
        calls = drive(f"{upstream}/v1", "ref", None, session, session_scope=using_session)
        calls += drive_protocols(upstream, "ref", session, using_session)
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        tp.shutdown()
    spans, _ = phoenix.wait_spans(REF_PROJECT, len(calls), SPAN_DEADLINE_S)
    by_case: dict[str, dict] = {}
    for sp in spans:
        tag = span_tag(sp)
        if tag and tag[1] == "ref":
            by_case[tag[0]] = sp
    return by_case, calls


VALUE_EXEMPT = re.compile(
    r"(\.id|\.tool_call_id|^session\.id|^input\.value|^output\.value|invocation_parameters)$")


def normalize(v: Any) -> Any:
    return TAG.sub(lambda m: f"[e2e:{m.group(1)}:ref]", v) if isinstance(v, str) else v


def json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return type(v).__name__


def intended(case: str, kind: str, key: str) -> Optional[str]:
    """Why INTENDED_GAPS allows this difference, or None."""
    return next((why for prefix, k, pat, why in INTENDED_GAPS
                 if k == kind and (prefix is None or case.startswith(prefix))
                 and pat.search(key)), None)


def compare_with_reference(case: str, ours: dict[str, Any], ref: dict[str, Any]
                           ) -> tuple[list[str], list[str]]:
    """(failures, notes): keys the reference has that we lack, or typed differently;
    notes list what we add beyond it."""
    a, b = ours.get("attributes") or {}, ref.get("attributes") or {}
    failures, notes = [], []
    missing = []
    for key in sorted(set(b) - set(a)):
        if intended(case, MISSING, key) is None:
            missing.append(f"{key} (reference: {json.dumps(b[key])[:80]})")
    if missing:
        failures.append("keys the official OpenInference instrumentation emits for the same "
                        "call but celgate's span lacks:\n  " + "\n  ".join(missing))
    if ours.get("span_kind") != ref.get("span_kind"):
        failures.append(f"span kind {ours.get('span_kind')!r}, reference {ref.get('span_kind')!r}")
    if ours.get("name") != ref.get("name"):
        failures.append(f"span name {ours.get('name')!r}, reference {ref.get('name')!r}")
    if ours.get("status_code") != ref.get("status_code"):
        failures.append(f"span status {ours.get('status_code')!r}, reference "
                     f"{ref.get('status_code')!r}")
    common = sorted(set(a) & set(b))
    typed = [f"{k}: {json_type(a[k])} (reference {json_type(b[k])})"
             for k in common if json_type(a[k]) != json_type(b[k])]
    if typed:
        failures.append("typed differently from the reference: " + "; ".join(typed))
    # Same exchange, so the same values -- once the transport in the tags is normalized.
    # Ids differ by construction (the scripted upstream hashes the arguments, which hold
    # the tag); raw bodies and parameters are compared as notes only.
    differ = []
    for key in common:
        if json_type(a[key]) != json_type(b[key]) or VALUE_EXEMPT.search(key):
            continue
        if intended(case, VALUE, key) is not None:
            continue
        va, vb = normalize(a[key]), normalize(b[key])
        if key.endswith((".json_schema", ".arguments", "invocation_parameters")):
            try:
                va, vb = json.loads(va), json.loads(vb)
            except (TypeError, ValueError):
                pass
        if va != vb:
            differ.append(f"{key}: {json.dumps(va)[:120]} (reference {json.dumps(vb)[:120]})")
    if differ:
        failures.append("values differ from the reference:\n  " + "\n  ".join(differ))
    for key in ("llm.invocation_parameters", "embedding.invocation_parameters"):
        if key in a and key in b and normalize(a[key]) != normalize(b[key]):
            notes.append(f"{key} {a[key]} (reference {b[key]})")
    extra = sorted(set(a) - set(b))
    if extra:
        notes.append("beyond the reference: " + ", ".join(extra))
    return failures, notes


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def celgate_config(path: Path, transport: str, project: str, phoenix: Phoenix,
                   upstream: str) -> None:
    endpoint = (f"http://127.0.0.1:{phoenix.grpc_port}" if transport == "grpc" else phoenix.base)
    path.write_text(f"""\
listen: 127.0.0.1:0
admin: 127.0.0.1:0
config:
  tracing:
    preset: phoenix
    otlpEndpoint: {endpoint}
    otlpProtocol: {transport}
    resources:
      openinference.project.name: '"{project}"'
backends:
  - name: scripted
    baseUrl: {upstream}/v1
    apiKey: {{env: SCRIPTED_KEY}}
  - name: scripted-anthropic
    provider: anthropic
    baseUrl: {upstream}/v1
    apiKey: {{env: SCRIPTED_KEY}}
  - name: scripted-gemini
    provider: gemini
    baseUrl: {upstream}/v1beta
    apiKey: {{env: SCRIPTED_KEY}}
""")


def main() -> int:
    celgate = os.environ.get("CELGATE_BIN")
    if not celgate or not os.access(celgate, os.X_OK):
        log(f"CELGATE_BIN must name the celgate binary (got {celgate!r})")
        return 2
    phoenix_bin = os.environ.get("PHOENIX_BIN") or str(Path(sys.executable).parent / "phoenix")
    node_bin = os.environ.get("NODE_BIN") or shutil.which("node") or "node"
    import importlib.metadata as md

    versions = {
        "arize-phoenix": md.version("arize-phoenix"),
        "openai (Python)": openai.__version__,
        "openai (npm)": json.loads((HERE / "node_modules/openai/package.json").read_text())["version"],
        "node": subprocess.run([node_bin, "--version"], capture_output=True, text=True).stdout.strip(),
        "python": sys.version.split()[0],
        "celgate": subprocess.run([celgate, "--version"], capture_output=True, text=True).stdout.strip(),
    }
    log("== versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

    tmp = Path(tempfile.mkdtemp(prefix="celgate-e2e-"))
    logdir = tmp / "logs"
    logdir.mkdir()
    procs: list[Proc] = []
    timings: dict[str, float] = {}
    results: list[tuple[str, str, list[str]]] = []  # transport, case, failures
    notes: list[str] = []
    ours: dict[str, dict[str, dict]] = {}  # transport -> case -> span
    fatal: Optional[str] = None
    t_all = time.monotonic()
    try:
        # Phoenix
        phoenix = Phoenix(free_port(), free_port())
        t0 = time.monotonic()
        phx = Proc("phoenix", [phoenix_bin, "serve"], clean_env(
            PHOENIX_HOST="127.0.0.1",
            PHOENIX_PORT=str(phoenix.base.rsplit(":", 1)[1]),
            PHOENIX_GRPC_PORT=str(phoenix.grpc_port),
            PHOENIX_WORKING_DIR=str(tmp / "phoenix"),
            PHOENIX_TELEMETRY_ENABLED="false",
            PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
            DO_NOT_TRACK="1",
        ), logdir)
        procs.append(phx)
        log(f"== phoenix: starting on {phoenix.base} (OTLP gRPC :{phoenix.grpc_port}), "
            f"data in {tmp / 'phoenix'}")
        while not phoenix.healthy():
            if phx.proc.poll() is not None:
                raise RuntimeError(f"phoenix exited with {phx.proc.returncode}\n{phx.tail()}")
            if time.monotonic() - t0 > PHOENIX_START_DEADLINE_S:
                raise RuntimeError(f"phoenix not healthy after {PHOENIX_START_DEADLINE_S:.0f}s"
                                   f"\n{phx.tail()}")
            time.sleep(0.5)
        timings["phoenix start"] = time.monotonic() - t0
        log(f"   healthy after {timings['phoenix start']:.1f}s")

        # scripted upstream
        up = Proc("upstream", [celgate, "upstream", "--listen", "127.0.0.1:0"], clean_env(),
                  logdir, wait_for=re.compile(r"scripted upstream listening on (\S+)"))
        procs.append(up)
        upstream = "http://" + up.wait_line(1, 30)[0].group(1)
        log(f"== scripted upstream on {upstream}")

        for transport in TRANSPORTS:
            project = f"celgate-e2e-{transport}"
            cfg = tmp / f"celgate-{transport}.yaml"
            celgate_config(cfg, transport, project, phoenix, upstream)
            gw = Proc(f"celgate-{transport}", [celgate, "run", "--config", str(cfg)], clean_env(
                SCRIPTED_KEY=UPSTREAM_KEY, OTEL_BSP_SCHEDULE_DELAY="200",
            ), logdir, wait_for=re.compile(r"(proxy|admin) listening on (\S+)"))
            procs.append(gw)
            addrs = {m.group(1): m.group(2) for m in gw.wait_line(2, 30)}
            base_url = f"http://{addrs['proxy']}/v1"
            log(f"== {transport}: celgate on {base_url} -> project {project!r}")

            t0 = time.monotonic()
            session_id = f"e2e-session-{transport}-{secrets.token_hex(4)}"
            calls = drive(base_url, transport, node_bin, session_id)
            calls += drive_protocols(f"http://{addrs['proxy']}", transport, session_id,
                                     lambda _sid: contextlib.nullcontext())
            timings[f"{transport}: traffic ({len(calls)} calls)"] = time.monotonic() - t0
            log(f"   {len(calls)} calls made: " + ", ".join(c.case for c in calls))

            t0 = time.monotonic()
            code = gw.stop()
            access = [line for line in gw.stdout_path.read_text("utf-8", "replace").splitlines()
                      if line.strip()]
            if len(access) != len(calls):
                notes.append(f"{transport}: access log has {len(access)} lines for "
                             f"{len(calls)} requests")
            # celgate's own count, logged on shutdown: "spans exported N, dropped M"
            m = re.search(r"spans exported (\d+), dropped (\d+)",
                          ANSI.sub("", gw.stderr_path.read_text("utf-8", "replace")))
            exported = [] if code == 0 else [f"celgate exited {code} on SIGTERM"]
            if m is None:
                notes.append(f"{transport}: no 'spans exported N, dropped M' line on shutdown")
            elif (int(m.group(1)), int(m.group(2))) != (len(calls), 0):
                exported.append(f"celgate logged {m.group(0)!r}, want {len(calls)} exported, "
                                f"0 dropped")
            results.append((transport, "clean shutdown, every span exported", exported))

            spans, waited = phoenix.wait_spans(project, len(calls), SPAN_DEADLINE_S)
            timings[f"{transport}: spans in Phoenix after SIGTERM"] = time.monotonic() - t0
            log(f"   {len(spans)} spans in Phoenix after {waited:.1f}s")

            by_case: dict[str, list[dict]] = {}
            stray: list[dict] = []
            for s in spans:
                tag = span_tag(s)
                if tag and tag[1] == transport:
                    by_case.setdefault(tag[0], []).append(s)
                else:
                    stray.append(s)

            def session_ok(proj: str, sid: str = session_id) -> Optional[str]:
                status, body = phoenix.get(f"/v1/sessions/{urllib.parse.quote(sid)}")
                if status != 200:
                    return f"Phoenix has no session {sid!r}: HTTP {status} {body}"
                _, pbody = phoenix.get(f"/v1/projects/{urllib.parse.quote(proj)}")
                pid = (pbody or {}).get("data", {}).get("id") if isinstance(pbody, dict) else None
                if body["data"].get("project_id") != pid:
                    return (f"session {sid!r} is in project {body['data'].get('project_id')}, "
                            f"want {proj} ({pid})")
                if len(body["data"].get("traces") or []) != 1:
                    return f"session {sid!r} has traces {body['data'].get('traces')}, want 1"
                return None

            for call in calls:
                found = by_case.get(call.case, [])
                if len(found) != 1:
                    msg = (f"want exactly one span tagged {call.tag} in project {project!r}, "
                           f"found {len(found)}")
                    if not found:
                        msg += f"; the project has {len(spans)} spans:\n" + "\n".join(
                            describe(s, 12) for s in spans)
                    results.append((transport, call.case, [msg]))
                    continue
                span = found[0]
                ours.setdefault(transport, {})[call.case] = span
                stored = phoenix.graphql(SPAN_GQL, {"id": span["id"]})["node"] or {}
                failures = check_span(span, call, project, stored, session_ok)
                if failures:
                    failures.append("the span as Phoenix returned it:\n" + describe(span))
                results.append((transport, call.case, failures))
            if stray:
                results.append((transport, "no stray spans", [
                    f"{len(stray)} span(s) in {project!r} not from this transport's calls:\n"
                    + "\n".join(describe(s, 12) for s in stray)]))

        # each project got only its own spans; nothing fell into the default project
        default = phoenix.spans("default") or []
        results.append(("both", "projects kept apart", [] if not default else [
            f"{len(default)} span(s) went to Phoenix's `default` project (resource attribute "
            f"`openinference.project.name` not honoured?):\n"
            + "\n".join(describe(s, 12) for s in default)]))

        # the yardstick: the same calls through the official instrumentation
        if REFERENCE_MODE != "off":
            t0 = time.monotonic()
            ref_by_case, ref_calls = reference_pass(phoenix, upstream)
            timings["reference pass"] = time.monotonic() - t0
            log(f"== reference: {len(ref_by_case)} spans from " + ", ".join(
                f"{d} {md.version(d)}" for d in REFERENCE_DISTS) + f" in {REF_PROJECT!r}")
            for call in ref_calls:
                ref = ref_by_case.get(call.case)
                if ref is None:
                    results.append(("ref", call.case, [f"no reference span for {call.tag}"]))
                    continue
                failures, case_notes = [], []
                for transport in TRANSPORTS:
                    span = ours.get(transport, {}).get(call.case)
                    if span is None:
                        continue  # already reported
                    f, n = compare_with_reference(call.case, span, ref)
                    failures += [f"{transport}: {x}" for x in f]
                    case_notes += n
                if REFERENCE_MODE == "report":
                    case_notes += failures
                    failures = []
                notes += [f"{call.case}: {n}" for n in dict.fromkeys(case_notes)]
                label = f"{call.case}: same keys, types and values as the reference"
                if REFERENCE_MODE == "report":
                    label += " (report only: gaps are in the notes)"
                results.append(("ref", label, failures))
    except Exception as e:  # noqa: BLE001 - report anything as a failure with context
        fatal = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    finally:
        for p in reversed(procs):
            p.stop()
        timings["total"] = time.monotonic() - t_all

    passed = sum(1 for _, _, f in results if not f)
    failed = len(results) - passed + (1 if fatal else 0)
    log("\n== results")
    for transport, case, failures in results:
        log(f"  {'ok  ' if not failures else 'FAIL'} {transport:5} {case}")
        for f in failures:
            log("         - " + f.replace("\n", "\n           "))
    if fatal:
        log(f"  FAIL (aborted) {fatal}")
        for p in procs:
            log(p.tail())
    if notes:
        log("\n== notes (not failures)")
        for n in notes:
            log("  - " + n)
    log("\n== timings")
    for k, v in timings.items():
        log(f"  {k}: {v:.1f}s")
    if failed or os.environ.get("E2E_KEEP_TMP") == "1":
        log(f"\nlogs and Phoenix's database kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"e2e: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
