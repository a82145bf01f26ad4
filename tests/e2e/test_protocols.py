"""The official SDKs of the three new protocols, unchanged, through a real celgate.

`anthropic` (Messages: create, stream, tool use and its result, thinking), `openai`
(`responses.create`: JSON, stream, function calls and their output, reasoning summary)
and `google-genai` (generate_content, stream, function calling and its response, thoughts)
each call celgate, whose `anthropic` / `openai` / `gemini` backends point at the scripted
upstream (`stack.py` draws the wiring). Per call:

- the SDK got exactly what the backend sent (the answer bytes at the client tap equal
  those at the backend tap, same status), and what it parsed is the scripted answer;
- the backend received our key for that provider in its header (`x-api-key`,
  `Authorization: Bearer`, `x-goog-api-key`), never the client's key nor another
  backend's, and no `?key=`;
- exactly one span in the call's trace (the SDK sends a `traceparent`), with the
  operation, provider, API, model, token counts (the SDK's usage, under the documented
  semantics), completion, tool calls, reasoning and system instructions; no key in it.

    CELGATE_BIN=target/debug/celgate tests/e2e/.venv-protocols/bin/python tests/e2e/test_protocols.py

E2E_DIRECT=1 leaves celgate out (SDK → upstream through the taps) and checks only what
the SDKs got. The last line is `e2e: N passed, M failed` (one per call).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import anthropic
import openai
from google import genai
from google.genai import types as gt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import CLIENT_KEY, KEYS, Stack, secrets_in, spans_with_secrets  # noqa: E402
from tap import Recorded  # noqa: E402
from test_phoenix import log  # noqa: E402

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city"],
}
CALL = 'What is the weather? call get_weather {"city": "Paris", "unit": "c"}'
CALL_ARGS = {"city": "Paris", "unit": "c"}
SYSTEM = "You are a terse assistant."

# Per provider: the attributes every span must have, and the header our key travels in.
EXPECT = {
    "anthropic": {"t.api": "messages", "t.operation": "chat", "t.provider": "anthropic",
                  "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic"},
    "openai": {"t.api": "responses", "t.operation": "chat", "t.provider": "openai",
               "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"},
    "gemini": {"t.api": "generate_content", "t.operation": "generate_content",
               "t.provider": "gemini", "gen_ai.operation.name": "generate_content",
               "gen_ai.provider.name": "gcp.gemini"},
}
KEY_HEADER = {"anthropic": ("x-api-key", ""), "openai": ("authorization", "Bearer "),
              "gemini": ("x-goog-api-key", "")}


class Failed(Exception):
    pass


class Call:
    """One SDK call: its trace, what the SDK made of the answer, what the span must say."""

    def __init__(self, provider: str, model: str, streaming: bool) -> None:
        self.provider, self.model, self.streaming = provider, model, streaming
        self.trace_id = secrets.token_hex(16)
        self.traceparent = f"00-{self.trace_id}-{secrets.token_hex(8)}-01"
        self.text = ""
        self.reasoning = ""
        self.tool_calls: list[dict[str, Any]] = []  # {id, name, arguments (parsed)}
        self.system: list[str] = []
        self.tokens: dict[str, Optional[int]] = {}
        self.failures: list[str] = []

    def expect(self, cond: bool, what: str) -> None:
        if not cond:
            self.failures.append(what)

    @property
    def headers(self) -> dict[str, str]:
        return {"traceparent": self.traceparent}


# --------------------------------------------------------------------------------------
# Anthropic Messages
# --------------------------------------------------------------------------------------


def anthropic_client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=CLIENT_KEY, max_retries=0, timeout=30)


def anthropic_read(c: Call, msg: Any) -> None:
    for block in msg.content:
        if block.type == "text":
            c.text += block.text
        elif block.type == "thinking":
            c.reasoning += block.thinking
        elif block.type == "tool_use":
            c.tool_calls.append({"id": block.id, "name": block.name, "arguments": block.input})
    u = msg.usage
    cache_read = u.cache_read_input_tokens or 0
    c.tokens = {"t.input_tokens": u.input_tokens + cache_read + (u.cache_creation_input_tokens or 0),
                "t.output_tokens": u.output_tokens, "t.cache_read_tokens": cache_read}


def anthropic_create(url: str) -> Call:
    c = Call("anthropic", "claude-e2e", False)
    c.system = [SYSTEM, "Cached context block."]
    msg = anthropic_client(url).messages.create(
        model=c.model, max_tokens=64, extra_headers=c.headers,
        system=[{"type": "text", "text": SYSTEM},
                {"type": "text", "text": "Cached context block.",
                 "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Hello from the anthropic SDK"}])
    anthropic_read(c, msg)
    c.expect(c.text == "Scripted reply to: Hello from the anthropic SDK", f"text {c.text!r}")
    c.expect(msg.usage.cache_read_input_tokens == 3,
             f"cache_read_input_tokens {msg.usage.cache_read_input_tokens} (3 cached words)")
    return c


def anthropic_stream(url: str) -> Call:
    c = Call("anthropic", "claude-e2e", True)
    c.system = [SYSTEM]
    with anthropic_client(url).messages.stream(
            model=c.model, max_tokens=64, system=SYSTEM, extra_headers=c.headers,
            messages=[{"role": "user", "content": "Stream a few words"}]) as s:
        deltas = "".join(s.text_stream)
        msg = s.get_final_message()
    anthropic_read(c, msg)
    c.expect(deltas == c.text == "Scripted reply to: Stream a few words", f"text {c.text!r}")
    return c


WEATHER_TOOL = {"name": "get_weather", "description": "Weather of a city",
                "input_schema": WEATHER_SCHEMA}


def anthropic_tool_use(url: str) -> Call:
    c = Call("anthropic", "claude-e2e", True)
    with anthropic_client(url).messages.stream(
            model=c.model, max_tokens=64, tools=[WEATHER_TOOL], extra_headers=c.headers,
            messages=[{"role": "user", "content": CALL}]) as s:
        msg = s.get_final_message()
    anthropic_read(c, msg)
    c.expect(msg.stop_reason == "tool_use", f"stop_reason {msg.stop_reason}")
    c.expect([(t["name"], t["arguments"]) for t in c.tool_calls] == [("get_weather", CALL_ARGS)],
             f"tool calls {c.tool_calls}")
    return c


def anthropic_tool_result(url: str) -> Call:
    c = Call("anthropic", "claude-e2e", False)
    msg = anthropic_client(url).messages.create(
        model=c.model, max_tokens=64, tools=[WEATHER_TOOL], extra_headers=c.headers,
        messages=[{"role": "user", "content": CALL},
                  {"role": "assistant", "content": [
                      {"type": "tool_use", "id": "toolu_e2e1", "name": "get_weather",
                       "input": CALL_ARGS}]},
                  {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": "toolu_e2e1",
                       "content": "Sunny, 21 C"}]}])
    anthropic_read(c, msg)
    c.expect(c.text == "Scripted reply to tool result: Sunny, 21 C", f"text {c.text!r}")
    c.expect(not c.tool_calls, f"tool calls {c.tool_calls}")
    return c


def anthropic_thinking(url: str) -> Call:
    c = Call("anthropic", "claude-e2e", True)
    with anthropic_client(url).messages.stream(
            model=c.model, max_tokens=2048, extra_headers=c.headers,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "Think first"}]) as s:
        msg = s.get_final_message()
    anthropic_read(c, msg)
    c.expect(c.reasoning == "Scripted thinking about: Think first", f"thinking {c.reasoning!r}")
    c.expect(any(b.type == "thinking" and b.signature for b in msg.content), "no signature")
    c.expect(c.text == "Scripted reply to: Think first", f"text {c.text!r}")
    return c


# --------------------------------------------------------------------------------------
# OpenAI Responses
# --------------------------------------------------------------------------------------


def openai_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def responses_read(c: Call, resp: Any) -> None:
    for item in resp.output:
        if item.type == "message":
            c.text += "".join(p.text for p in item.content if p.type == "output_text")
        elif item.type == "reasoning":
            c.reasoning += "\n".join(s.text for s in (item.summary or []))
        elif item.type == "function_call":
            c.tool_calls.append({"id": item.call_id, "name": item.name,
                                 "arguments": json.loads(item.arguments)})
    u = resp.usage
    c.tokens = {"t.input_tokens": u.input_tokens, "t.output_tokens": u.output_tokens,
                "t.total_tokens": u.total_tokens,
                "t.cache_read_tokens": u.input_tokens_details.cached_tokens,
                "t.reasoning_tokens": u.output_tokens_details.reasoning_tokens}


def responses_create(url: str) -> Call:
    c = Call("openai", "gpt-e2e", False)
    c.system = [SYSTEM]
    resp = openai_client(url).responses.create(
        model=c.model, instructions=SYSTEM, input="Hello from the openai SDK",
        temperature=0.5, max_output_tokens=64, extra_headers=c.headers)
    responses_read(c, resp)
    c.expect(resp.output_text == c.text == "Scripted reply to: Hello from the openai SDK",
             f"text {c.text!r}")
    return c


def responses_stream(url: str) -> Call:
    c = Call("openai", "gpt-e2e", True)
    c.system = [SYSTEM]
    events = list(openai_client(url).responses.create(
        model=c.model, instructions=SYSTEM, stream=True, extra_headers=c.headers,
        reasoning={"effort": "low", "summary": "auto"},
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Stream please"}]}]))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = [e.response for e in events if e.type == "response.completed"]
    c.expect(len(done) == 1, f"{len(done)} response.completed events")
    if done:
        responses_read(c, done[0])
    c.expect(deltas == c.text == "Scripted reply to: Stream please", f"text {c.text!r}")
    c.expect(c.reasoning == "Scripted thinking about: Stream please", f"summary {c.reasoning!r}")
    return c


RESP_TOOL = {"type": "function", "name": "get_weather", "description": "Weather of a city",
             "parameters": WEATHER_SCHEMA, "strict": False}


def responses_function_call(url: str) -> Call:
    c = Call("openai", "gpt-e2e", True)
    events = list(openai_client(url).responses.create(
        model=c.model, input=CALL, tools=[RESP_TOOL], stream=True, extra_headers=c.headers))
    args = "".join(e.delta for e in events
                   if e.type == "response.function_call_arguments.delta")
    done = [e.response for e in events if e.type == "response.completed"]
    if done:
        responses_read(c, done[0])
    c.expect([(t["name"], t["arguments"]) for t in c.tool_calls] == [("get_weather", CALL_ARGS)],
             f"function calls {c.tool_calls}")
    c.expect(bool(args) and json.loads(args) == CALL_ARGS, f"streamed arguments {args!r}")
    return c


def responses_function_output(url: str) -> Call:
    c = Call("openai", "gpt-e2e", False)
    resp = openai_client(url).responses.create(
        model=c.model, tools=[RESP_TOOL], extra_headers=c.headers, input=[
            {"role": "user", "content": CALL},
            {"type": "function_call", "call_id": "call_e2e1", "name": "get_weather",
             "arguments": json.dumps(CALL_ARGS)},
            {"type": "function_call_output", "call_id": "call_e2e1", "output": "Sunny, 21 C"}])
    responses_read(c, resp)
    c.expect(c.text == "Scripted reply to tool result: Sunny, 21 C", f"text {c.text!r}")
    return c


# --------------------------------------------------------------------------------------
# Gemini generateContent
# --------------------------------------------------------------------------------------


def gemini_client(url: str) -> genai.Client:
    return genai.Client(api_key=CLIENT_KEY, http_options=gt.HttpOptions(
        base_url=url, api_version="v1beta", timeout=30_000,
        retry_options=gt.HttpRetryOptions(attempts=1)))


def gemini_read(c: Call, chunks: list[Any]) -> None:
    for chunk in chunks:
        for cand in chunk.candidates or []:
            for part in (cand.content.parts if cand.content else None) or []:
                if part.thought and part.text:
                    c.reasoning += part.text
                elif part.text:
                    c.text += part.text
                elif part.function_call:
                    fc = part.function_call
                    c.tool_calls.append({"id": fc.id, "name": fc.name, "arguments": fc.args})
    u = chunks[-1].usage_metadata if chunks else None
    if u:
        c.tokens = {"t.input_tokens": u.prompt_token_count,
                    "t.output_tokens": (u.candidates_token_count or 0) + (u.thoughts_token_count or 0),
                    "t.reasoning_tokens": u.thoughts_token_count}


def gemini_config(c: Call, **kw: Any) -> gt.GenerateContentConfig:
    return gt.GenerateContentConfig(http_options=gt.HttpOptions(headers=c.headers), **kw)


def gemini_generate(url: str) -> Call:
    c = Call("gemini", "gemini-e2e", False)
    c.system = [SYSTEM]
    client = gemini_client(url)  # held: a dropped client closes its connections
    resp = client.models.generate_content(
        model=c.model, contents="Hello from google-genai",
        config=gemini_config(c, system_instruction=SYSTEM, temperature=0.5))
    gemini_read(c, [resp])
    c.expect(resp.text == c.text == "Scripted reply to: Hello from google-genai", f"text {c.text!r}")
    return c


def gemini_stream(url: str) -> Call:
    c = Call("gemini", "gemini-e2e", True)
    c.system = [SYSTEM]
    client = gemini_client(url)  # held: a dropped client closes its connections
    chunks = list(client.models.generate_content_stream(
        model=c.model, contents="Stream from gemini",
        config=gemini_config(c, system_instruction=SYSTEM,
                             thinking_config=gt.ThinkingConfig(include_thoughts=True))))
    gemini_read(c, chunks)
    c.expect(len(chunks) > 1, f"{len(chunks)} chunks")
    c.expect(c.text == "Scripted reply to: Stream from gemini", f"text {c.text!r}")
    c.expect(c.reasoning == "Scripted thinking about: Stream from gemini", f"thought {c.reasoning!r}")
    return c


GEMINI_TOOL = gt.Tool(function_declarations=[gt.FunctionDeclaration(
    name="get_weather", description="Weather of a city", parameters_json_schema=WEATHER_SCHEMA)])
NO_AUTO = gt.AutomaticFunctionCallingConfig(disable=True)


def gemini_function_call(url: str) -> Call:
    c = Call("gemini", "gemini-e2e", True)
    client = gemini_client(url)  # held: a dropped client closes its connections
    chunks = list(client.models.generate_content_stream(
        model=c.model, contents=CALL,
        config=gemini_config(c, tools=[GEMINI_TOOL], automatic_function_calling=NO_AUTO)))
    gemini_read(c, chunks)
    c.expect([(t["name"], t["arguments"]) for t in c.tool_calls] == [("get_weather", CALL_ARGS)],
             f"function calls {c.tool_calls}")
    return c


def gemini_function_response(url: str) -> Call:
    c = Call("gemini", "gemini-e2e", False)
    contents = [
        gt.Content(role="user", parts=[gt.Part(text=CALL)]),
        gt.Content(role="model", parts=[gt.Part(function_call=gt.FunctionCall(
            name="get_weather", args=CALL_ARGS))]),
        gt.Content(role="user", parts=[gt.Part(function_response=gt.FunctionResponse(
            name="get_weather", response={"result": "Sunny, 21 C"}))]),
    ]
    client = gemini_client(url)  # held: a dropped client closes its connections
    resp = client.models.generate_content(
        model=c.model, contents=contents,
        config=gemini_config(c, tools=[GEMINI_TOOL], automatic_function_calling=NO_AUTO))
    gemini_read(c, [resp])
    c.expect(c.text.startswith("Scripted reply to tool result: ") and "Sunny, 21 C" in c.text,
             f"text {c.text!r}")
    return c


CASES: list[tuple[str, Callable[[str], Call]]] = [
    ("anthropic create (system blocks, cache_control)", anthropic_create),
    ("anthropic stream", anthropic_stream),
    ("anthropic tool use (stream)", anthropic_tool_use),
    ("anthropic tool result", anthropic_tool_result),
    ("anthropic thinking (stream)", anthropic_thinking),
    ("responses create", responses_create),
    ("responses stream (reasoning summary)", responses_stream),
    ("responses function call (stream)", responses_function_call),
    ("responses function_call_output", responses_function_output),
    ("gemini generate_content", gemini_generate),
    ("gemini stream (thoughts)", gemini_stream),
    ("gemini function call (stream)", gemini_function_call),
    ("gemini function response", gemini_function_response),
]


# --------------------------------------------------------------------------------------
# Checks on the wire and on the span
# --------------------------------------------------------------------------------------


def check_wire(c: Call, client: list[Recorded], backend: list[Recorded], direct: bool) -> None:
    c.expect(len(client) == 1 and len(backend) == 1,
             f"{len(client)} client request(s), {len(backend)} backend request(s), not 1 and 1")
    if not client or not backend:
        return
    sent, got = client[0], backend[0]
    c.expect(sent.status == got.status == 200, f"status client {sent.status}, backend {got.status}")
    c.expect(sent.response_body == got.response_body,
             f"the SDK got {len(sent.response_body)} bytes, the backend sent "
             f"{len(got.response_body)}; they differ")
    if direct:
        return
    name, prefix = KEY_HEADER[c.provider]
    c.expect(got.header(name) == [prefix + KEYS[c.provider]],
             f"backend {name} is not our {c.provider} key (got {len(got.header(name))} value(s))")
    leaked = [s for s in secrets_in(got) if s != f"{c.provider} backend key"]
    c.expect(not leaked, f"the backend received {', '.join(leaked)}")
    c.expect("key" not in got.query(), "the backend received a ?key= query parameter")


def check_span(c: Call, spans: list[dict[str, Any]]) -> None:
    c.expect(len(spans) == 1, f"{len(spans)} spans in trace {c.trace_id}, not 1")
    if not spans:
        return
    a = spans[0]["attributes"]

    def eq(key: str, want: Any) -> None:
        c.expect(a.get(key) == want, f"span {key} = {a.get(key)!r}, want {want!r}")

    for key, want in EXPECT[c.provider].items():
        eq(key, want)
    eq("t.model", c.model)
    eq("t.streaming", c.streaming)
    eq("t.status", 200)
    c.expect("t.error" not in a and "error.type" not in a, f"error {a.get('error.type')!r}")
    for key, want in c.tokens.items():
        if want:
            eq(key, want)
        else:
            c.expect(a.get(key) in (None, 0), f"span {key} = {a.get(key)!r}, want 0 or none")
    eq("t.system", json.dumps(c.system, separators=(",", ":")))
    eq("t.completion", json.dumps([c.text], separators=(",", ":")))
    if c.reasoning:
        c.expect(json.loads(a.get("t.reasoning", "[]")) == [c.reasoning],
                 f"span t.reasoning = {a.get('t.reasoning')!r}")
    got = [{"id": t.get("id"), "name": t.get("name"), "arguments": json.loads(t["arguments"])}
           for t in json.loads(a.get("t.tool_calls", "[]"))]
    want = [{"id": t["id"] or got_id(got, i), "name": t["name"], "arguments": t["arguments"]}
            for i, t in enumerate(c.tool_calls)]
    c.expect(got == want, f"span tool calls {got}, the SDK got {want}")
    c.expect(isinstance(a.get("t.ttft"), float), f"t.ttft = {a.get('t.ttft')!r}")
    for leak in spans_with_secrets(spans):
        c.failures.append(leak)


def got_id(got: list[dict[str, Any]], i: int) -> Any:
    """Gemini function calls may carry no id: then the span's id is not compared."""
    return got[i]["id"] if i < len(got) else None


def wait_trace(stack: Stack, trace_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = stack.sink.by_trace(trace_id) if stack.sink else []
        if spans:
            time.sleep(0.2)  # a second span of the same trace would be a failure: let it come
            return stack.sink.by_trace(trace_id)
        time.sleep(0.05)
    return []


def run_case(stack: Stack, label: str, fn: Callable[[str], Call]) -> bool:
    stack.take()
    try:
        c = fn(stack.url)
    except Exception as e:  # an SDK error is this case's failure, not the run's
        log(f"FAIL {label}: {type(e).__name__}: {e}")
        log(traceback.format_exc(limit=3))
        return False
    client, backend = stack.take()
    check_wire(c, client, backend, stack.direct)
    if not stack.direct:
        check_span(c, wait_trace(stack, c.trace_id))
    if c.failures:
        log(f"FAIL {label}:\n  - " + "\n  - ".join(c.failures))
        return False
    log(f"ok   {label}")
    return True


def main() -> int:
    direct = os.environ.get("E2E_DIRECT") == "1"
    celgate = os.environ.get("CELGATE_BIN")
    if not celgate or not os.access(celgate, os.X_OK):
        log(f"CELGATE_BIN must name the celgate binary (got {celgate!r})")
        return 2
    log(f"anthropic {anthropic.__version__}, openai {openai.__version__}, "
        f"google-genai {genai.__version__}{' (direct: no celgate)' if direct else ''}")
    passed = failed = 0
    keep = os.environ.get("E2E_KEEP_TMP") == "1"
    tmp = tempfile.mkdtemp(prefix="celgate-protocols-")
    stack = Stack(celgate, Path(tmp), direct)
    try:
        for label, fn in CASES:
            if run_case(stack, label, fn):
                passed += 1
            else:
                failed += 1
    finally:
        problems = stack.stop()
    for p in problems:
        log(f"FAIL {p}")
        failed += 1
    if failed or keep:
        log(f"logs kept in {tmp}")
    else:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"e2e: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
