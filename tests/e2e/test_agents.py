"""Claude Code, Codex and Gemini CLI, unchanged, through a real celgate.

Each pinned CLI (`agents.py` has the invocations) runs against celgate (`stack.py`:
backends `anthropic`, `openai`, `gemini` → the scripted upstream) twice:

- a turn: `Say hello` → the CLI exits 0 printing the scripted reply; one LLM call;
- a tool round trip: the prompt says `call <tool> {json args}` for a harmless tool the
  CLI runs without asking (Claude Code `Read`, Gemini CLI `read_file` of a file in its
  work dir; Codex 0.171 offers no file tool, so its `clock.sleep` of 1 ms), so the
  upstream answers with that tool call; the CLI runs it and sends the result; the
  upstream answers `Scripted reply to tool result: ...`, which the CLI prints.
  Two LLM calls, the second carrying the tool result.

Per run: the CLI got exactly what the backend sent (client tap = backend tap, per call),
the backend got our key for that provider and never the CLI's; one span per LLM call
with the API, operation and provider of the protocol, the tool call on the first span
of a round trip, and the session the CLI names (Claude Code `metadata.user_id`, Codex
`session-id` header; Gemini CLI names none) as `llm.sessionId`, the same on both calls.

    CELGATE_BIN=target/debug/celgate tests/e2e/.venv-protocols/bin/python tests/e2e/test_agents.py

E2E_DIRECT=1 leaves celgate out (only what the CLIs got is checked). The last line is
`e2e: N passed, M failed` (one per CLI and run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agents import AGENTS, installed_version, run  # noqa: E402
from stack import CLIENT_KEY, KEYS, Stack, secrets_in, spans_with_secrets  # noqa: E402
from tap import Recorded  # noqa: E402
from test_phoenix import log  # noqa: E402

FILE_TEXT = "celgate-e2e-file-contents"

# Per CLI: provider, the API its spans carry, the tool prompt, how its session is named.
SPEC: dict[str, dict[str, Any]] = {
    "claude-code": {"provider": "anthropic", "api": "messages",
                    "tool": lambda work: ("Read", {"file_path": str(work / "hello.txt")})},
    "codex": {"provider": "openai", "api": "responses",
              "tool": lambda work: ("sleep", {"duration_ms": 1})},
    "gemini-cli": {"provider": "gemini", "api": "generate_content",
                   "tool": lambda work: ("read_file", {"file_path": str(work / "hello.txt")})},
}
KEY_HEADER = {"anthropic": ("x-api-key", ""), "openai": ("authorization", "Bearer "),
              "gemini": ("x-goog-api-key", "")}


def session_of(name: str, rec: Recorded) -> Optional[str]:
    """The session id the CLI put in its request, where the issue says it does."""
    if name == "claude-code":
        user_id = (rec.json() or {}).get("metadata", {}).get("user_id")
        try:
            return json.loads(user_id).get("session_id")
        except (TypeError, ValueError, AttributeError):
            return None
    if name == "codex":
        values = rec.header("session-id")
        return values[0] if values else None
    return None


def answer_of(name: str, stdout: str) -> str:
    """The final answer the CLI printed in its JSON output ("" when there is none)."""
    try:
        if name == "codex":  # JSON lines: the last agent_message item
            items = [json.loads(line).get("item", {}) for line in stdout.splitlines() if line]
            texts = [i.get("text", "") for i in items if i.get("type") == "agent_message"]
            return texts[-1] if texts else ""
        doc = json.loads(stdout)
        return str(doc.get("result" if name == "claude-code" else "response") or "")
    except (ValueError, AttributeError):
        return ""


def is_llm_call(rec: Recorded) -> bool:
    path = rec.path.split("?")[0]
    return rec.method == "POST" and (path.endswith(("/messages", "/responses"))
                                     or ":generateContent" in path
                                     or ":streamGenerateContent" in path)


class Run:
    def __init__(self, name: str, what: str) -> None:
        self.label = f"{name} {what}"
        self.failures: list[str] = []

    def expect(self, cond: bool, what: str) -> None:
        if not cond:
            self.failures.append(what)


def check_wire(r: Run, provider: str, client: list[Recorded], backend: list[Recorded],
               direct: bool) -> None:
    r.expect(len(client) == len(backend),
             f"{len(client)} client requests but {len(backend)} at the backend")
    for i, (sent, got) in enumerate(zip(client, backend)):
        r.expect(sent.response_body == got.response_body and sent.status == got.status,
                 f"call {i}: the CLI did not get what the backend sent "
                 f"(status {sent.status}/{got.status})")
        if direct:
            continue
        name, prefix = KEY_HEADER[provider]
        r.expect(got.header(name) == [prefix + KEYS[provider]],
                 f"call {i}: the backend's {name} is not our {provider} key")
        leaked = [s for s in secrets_in(got) if s != f"{provider} backend key"]
        r.expect(not leaked, f"call {i}: the backend received {', '.join(leaked)}")
        r.expect("key" not in got.query(), f"call {i}: the backend received ?key=")


def check_spans(r: Run, name: str, calls: list[Recorded], spans: list[dict[str, Any]],
                tool: Optional[str]) -> None:
    spec = SPEC[name]
    r.expect(len(spans) == len(calls), f"{len(spans)} spans for {len(calls)} LLM calls")
    want_session = [session_of(name, c) for c in calls]
    for i, span in enumerate(spans[:len(calls)]):
        a = span["attributes"]
        for key, want in (("t.api", spec["api"]), ("t.provider", spec["provider"]),
                          ("t.status", 200)):
            r.expect(a.get(key) == want, f"span {i}: {key} = {a.get(key)!r}, want {want!r}")
        r.expect("error.type" not in a, f"span {i}: error.type {a.get('error.type')!r}")
        r.expect(a.get("t.session_id") == want_session[i],
                 f"span {i}: t.session_id = {a.get('t.session_id')!r}, "
                 f"the CLI sent {want_session[i]!r}")
        r.expect(isinstance(a.get("t.input_tokens"), int), f"span {i}: no input tokens")
    if name in ("claude-code", "codex"):
        r.expect(bool(want_session[0]), f"{name} named no session")
        r.expect(len(set(want_session)) == 1, f"sessions differ across calls: {want_session}")
    if tool and spans:
        names = [t.get("name") for t in json.loads(spans[0]["attributes"].get("t.tool_calls", "[]"))]
        r.expect(names == [tool], f"span 0 tool calls {names}, want [{tool!r}]")
    for leak in spans_with_secrets(spans):
        r.failures.append(leak)


def spans_since(stack: Stack, start: int, count: int, timeout: float = 10.0) -> list[dict]:
    if not stack.sink:
        return []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(stack.sink.spans) - start < count:
        time.sleep(0.05)
    time.sleep(0.2)  # an extra span would be a failure: give it the chance to come
    return stack.sink.spans[start:]


def agent_run(stack: Stack, name: str, tool_run: bool, tmp: Path) -> Run:
    r = Run(name, "tool round trip" if tool_run else "turn")
    home, work = tmp / f"{name}-{int(tool_run)}-home", tmp / f"{name}-{int(tool_run)}-work"
    home.mkdir()
    work.mkdir()
    (work / "hello.txt").write_text(FILE_TEXT + "\n")
    tool, args = SPEC[name]["tool"](work)
    prompt = f"call {tool} {json.dumps(args)}" if tool_run else "Say hello"
    stack.take()
    start = len(stack.sink.spans) if stack.sink else 0
    try:
        p = run(AGENTS[name], stack.url, prompt, work, home, timeout=120, key=CLIENT_KEY)
    except subprocess.TimeoutExpired:
        r.failures.append("the CLI did not finish within 120 s")
        return r
    client, backend = stack.take()
    out = p.stdout + p.stderr
    r.expect(p.returncode == 0, f"exit {p.returncode}: {out[-1500:]}")
    calls = [b for b in backend if is_llm_call(b)]
    answer = answer_of(name, p.stdout)
    # The scripted reply quotes the last user text, which the CLIs prefix with context.
    ok = (answer.startswith("Scripted reply to tool result:") if tool_run
          else answer.startswith("Scripted reply to:") and answer.endswith("Say hello"))
    r.expect(ok, f"the CLI answered {answer[:100]!r}...{answer[-100:]!r}")
    r.expect(len(calls) == (2 if tool_run else 1),
             f"{len(calls)} LLM calls: " + ", ".join(f"{c.method} {c.path}" for c in backend))
    if tool_run and len(calls) == 2:
        second = calls[1].body.decode("utf-8", "replace")
        if tool != "sleep":
            r.expect(FILE_TEXT in second, "the second call lacks the file the tool read")
    check_wire(r, SPEC[name]["provider"], client, backend, stack.direct)
    if not stack.direct:
        check_spans(r, name, calls, spans_since(stack, start, len(calls)),
                    tool if tool_run else None)
    return r


def main() -> int:
    direct = os.environ.get("E2E_DIRECT") == "1"
    celgate = os.environ.get("CELGATE_BIN")
    if not celgate or not os.access(celgate, os.X_OK):
        log(f"CELGATE_BIN must name the celgate binary (got {celgate!r})")
        return 2
    log(", ".join(f"{a.package} {installed_version(a.package)}" for a in AGENTS.values())
        + (" (direct: no celgate)" if direct else ""))
    passed = failed = 0
    tmp = Path(tempfile.mkdtemp(prefix="celgate-agents-"))
    stack = Stack(celgate, tmp, direct)
    try:
        for name in AGENTS:
            for tool_run in (False, True):
                t = time.monotonic()
                r = agent_run(stack, name, tool_run, tmp)
                took = f"{time.monotonic() - t:.1f}s"
                if r.failures:
                    failed += 1
                    log(f"FAIL {r.label} ({took}):\n  - " + "\n  - ".join(r.failures))
                else:
                    passed += 1
                    log(f"ok   {r.label} ({took})")
    finally:
        problems = stack.stop()
    for p in problems:
        log(f"FAIL {p}")
        failed += 1
    if failed or os.environ.get("E2E_KEEP_TMP") == "1":
        log(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"e2e: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
