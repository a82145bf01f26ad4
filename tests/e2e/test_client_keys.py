#!/usr/bin/env python3
"""End-to-end: client keys (`auth.clientKeys`) as the official OpenAI SDKs see them.

Starts celgate's scripted upstream (`celgate upstream`) and one `celgate run` whose
config turns client keys on, with a keys file listing one client by the SHA-256 of its
key. Then, with the official `openai` Python SDK (and, through `client_keys.mjs`, the
official `openai` npm package):

- the listed key as `api_key` (Authorization: Bearer): a chat, a streamed chat and
  `models.list()` succeed;
- the listed key in `x-api-key` (Authorization omitted), as Anthropic-style clients
  send it: succeeds;
- a wrong key: `openai.AuthenticationError` (401, code `invalid_api_key`,
  `WWW-Authenticate: Bearer ...`);
- a dummy key (what a user without one configures, since the SDK refuses
  `api_key=""` itself): `AuthenticationError` (`invalid_api_key`);
- no key at all (a dummy `api_key` with its Authorization header omitted):
  `AuthenticationError`, for a chat and for `models.list()`;
- the access log names the client on the calls it made and says `unauthenticated` on
  the refused ones; no key appears in anything celgate printed.

Run it through `bash tests/e2e/run.sh`. Directly:
    CELGATE_BIN=target/debug/celgate tests/e2e/.venv/bin/python tests/e2e/test_client_keys.py
Environment: CELGATE_BIN (required), NODE_BIN (default `node`), E2E_KEEP_TMP=1 keeps
the temp dir (logs). Exit status 0 when every check passed, 1 otherwise; the last line
is `e2e: N passed, M failed`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

import openai
from openai import OpenAI

HERE = Path(__file__).resolve().parent
MODEL = "gpt-4o-mini"
CLIENT = "e2e-python"
CLIENT_KEY = "sk-celgate-e2e-" + secrets.token_hex(16)
WRONG_KEY = "sk-celgate-e2e-wrong-" + secrets.token_hex(16)
UPSTREAM_KEY = "sk-scripted-e2e-" + secrets.token_hex(8)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log(msg: str) -> None:
    print(msg, flush=True)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "OPENINFERENCE_", "OPENAI_"))}
    env.update(extra)
    return env


class Proc:
    """A child process; stderr is copied to a log file and scanned for a pattern."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path,
                 wait_for: re.Pattern[str]) -> None:
        self.name = name
        self.stdout_path = logdir / f"{name}.stdout.log"
        self.stderr_path = logdir / f"{name}.stderr.log"
        self._stdout = open(self.stdout_path, "wb")
        self._wait_for = wait_for
        self.matches: list[re.Match[str]] = []
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._stdout, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        with open(self.stderr_path, "wb") as out:
            for raw in iter(self.proc.stderr.readline, b""):
                out.write(raw)
                out.flush()
                m = self._wait_for.search(ANSI.sub("", raw.decode("utf-8", "replace")))
                if m:
                    self.matches.append(m)

    def wait_line(self, count: int, timeout: float) -> list[re.Match[str]]:
        deadline = time.monotonic() + timeout
        while len(self.matches) < count:
            if self.proc.poll() is not None:
                self._thread.join(2)
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}\n"
                                   + self.stderr_path.read_text("utf-8", "replace"))
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s")
            time.sleep(0.05)
        return self.matches

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._thread.join(5)
        self._stdout.close()

    def output(self) -> str:
        return (self.stdout_path.read_text("utf-8", "replace")
                + self.stderr_path.read_text("utf-8", "replace"))


def write_config(tmp: Path, upstream: str) -> Path:
    # A Secret mounted in its own directory, beside the ConfigMap's.
    secret = tmp / "secret"
    secret.mkdir()
    digest = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    (secret / "clients.yaml").write_text(
        f"clients:\n  - name: {CLIENT}\n    sha256: {digest}\n    team: e2e\n")
    cfg = tmp / "config" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text(f"""\
listen: 127.0.0.1:0
admin: 127.0.0.1:0
auth:
  clientKeys:
    file: {secret / "clients.yaml"}
server:
  accessLog: {{format: json}}
backends:
  - name: scripted
    baseUrl: {upstream}/v1
    apiKey: {{env: SCRIPTED_KEY}}
    models: [{MODEL}]
""")
    return cfg


def expect_auth_error(call: Callable[[], object], code: Optional[str]) -> list[str]:
    """The SDK raises AuthenticationError with OpenAI's 401 body and a Bearer challenge."""
    try:
        call()
    except openai.AuthenticationError as e:
        failures = []
        if e.status_code != 401:
            failures.append(f"status {e.status_code}")
        if e.code != code:
            failures.append(f"code {e.code!r}, want {code!r}")
        if e.type != "invalid_request_error":
            failures.append(f"type {e.type!r}")
        challenge = e.response.headers.get("www-authenticate", "")
        if not challenge.startswith("Bearer"):
            failures.append(f"WWW-Authenticate {challenge!r}")
        for key in (CLIENT_KEY, WRONG_KEY):
            if key in str(e) or key in e.response.text:
                failures.append("the error echoes a key")
        return failures
    except Exception as e:  # noqa: BLE001 - any other outcome is the failure
        return [f"raised {type(e).__name__}: {e}"]
    return ["the call succeeded"]


def cases(base_url: str, node_bin: str) -> list[tuple[str, Callable[[], list[str]]]]:
    def sdk(api_key: str, **kw: object) -> OpenAI:
        return OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30, **kw)

    def chat(client: OpenAI, headers: Optional[dict[str, object]] = None) -> str:
        r = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}],
            extra_headers=headers)
        return r.choices[0].message.content or ""

    def valid_key() -> list[str]:
        return [] if chat(sdk(CLIENT_KEY)) else ["empty reply"]

    def valid_key_streamed() -> list[str]:
        stream = sdk(CLIENT_KEY).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return [] if text else ["empty stream"]

    def valid_key_models() -> list[str]:
        ids = [m.id for m in sdk(CLIENT_KEY).models.list()]
        return [] if ids else ["no models listed"]

    # The SDK wants some api_key; a per-request `omit` drops the Authorization header.
    no_auth: dict[str, object] = {"Authorization": openai.omit}

    def x_api_key() -> list[str]:
        reply = chat(sdk("unused"), {**no_auth, "x-api-key": CLIENT_KEY})
        return [] if reply else ["empty reply"]

    def wrong_key() -> list[str]:
        return expect_auth_error(lambda: chat(sdk(WRONG_KEY)), "invalid_api_key")

    def dummy_key() -> list[str]:
        return expect_auth_error(lambda: chat(sdk("sk-dummy")), "invalid_api_key")

    def no_key() -> list[str]:
        return expect_auth_error(lambda: chat(sdk("unused"), no_auth), None)

    def no_key_models() -> list[str]:
        client = sdk("unused")
        return expect_auth_error(lambda: list(client.models.list(extra_headers=no_auth)), None)

    def npm(key: str, want: str) -> Callable[[], list[str]]:
        def run() -> list[str]:
            r = subprocess.run([node_bin, str(HERE / "client_keys.mjs"), base_url, key],
                               capture_output=True, text=True, timeout=60,
                               env=clean_env())
            got = r.stdout.strip().splitlines()[-1:] or [f"(nothing; stderr {r.stderr!r})"]
            return [] if got[0] == want else [f"node printed {got[0]!r}, want {want!r}"]
        return run

    return [
        ("python: listed key as api_key: chat succeeds", valid_key),
        ("python: listed key as api_key: streamed chat succeeds", valid_key_streamed),
        ("python: listed key as api_key: models.list succeeds", valid_key_models),
        ("python: listed key in x-api-key: chat succeeds", x_api_key),
        ("python: wrong key: AuthenticationError invalid_api_key", wrong_key),
        ("python: dummy key: AuthenticationError invalid_api_key", dummy_key),
        ("python: no key: AuthenticationError", no_key),
        ("python: no key: models.list AuthenticationError", no_key_models),
        ("npm: listed key: chat succeeds", npm(CLIENT_KEY, "ok")),
        ("npm: wrong key: AuthenticationError 401", npm(WRONG_KEY, "AuthenticationError 401")),
    ]


def check_logs(gw: Proc, up: Proc, made: int, refused: int) -> list[tuple[str, list[str]]]:
    lines = [json.loads(line) for line in
             gw.stdout_path.read_text("utf-8", "replace").splitlines() if line.startswith("{")]
    ok = [line for line in lines if line.get("client") == CLIENT]
    bad = [line for line in lines if line.get("error") == "unauthenticated"]
    out = []
    f = [] if len(ok) >= made else [f"{len(ok)} lines name the client, want {made}"]
    f += [f"status {line['http.status']}" for line in ok if line["http.status"] != 200]
    out.append(("access log: client=NAME on each admitted call", f))
    f = [] if len(bad) == refused else [f"{len(bad)} unauthenticated lines, want {refused}"]
    f += [f"status {line['http.status']}" for line in bad if line["http.status"] != 401]
    f += ["a refused line names a client" for line in bad if line.get("client")]
    out.append(("access log: error=unauthenticated on each refused call", f))
    text = gw.output() + up.output()
    leaked = [name for name, key in (("client key", CLIENT_KEY), ("wrong key", WRONG_KEY),
                                     ("upstream key", UPSTREAM_KEY)) if key in text]
    out.append(("no key in anything celgate printed", [f"{n} printed" for n in leaked]))
    return out


def main() -> int:
    celgate = os.environ.get("CELGATE_BIN")
    if not celgate or not os.access(celgate, os.X_OK):
        log(f"CELGATE_BIN must name the celgate binary (got {celgate!r})")
        return 2
    node_bin = os.environ.get("NODE_BIN") or shutil.which("node") or "node"
    log(f"== client keys: openai (Python) {openai.__version__}")
    tmp = Path(tempfile.mkdtemp(prefix="celgate-e2e-keys-"))
    logdir = tmp / "logs"
    logdir.mkdir()
    procs: list[Proc] = []
    results: list[tuple[str, list[str]]] = []
    fatal: Optional[str] = None
    try:
        up = Proc("upstream", [celgate, "upstream", "--listen", "127.0.0.1:0"], clean_env(),
                  logdir, re.compile(r"scripted upstream listening on (\S+)"))
        procs.append(up)
        upstream = "http://" + up.wait_line(1, 30)[0].group(1)
        cfg = write_config(tmp, upstream)
        gw = Proc("celgate", [celgate, "run", "--config", str(cfg)],
                  clean_env(SCRIPTED_KEY=UPSTREAM_KEY), logdir,
                  re.compile(r"(proxy|admin) listening on (\S+)"))
        procs.append(gw)
        addrs = {m.group(1): m.group(2) for m in gw.wait_line(2, 30)}
        base_url = f"http://{addrs['proxy']}/v1"
        log(f"== celgate with client keys on {base_url}")
        for name, case in cases(base_url, node_bin):
            try:
                results.append((name, case()))
            except Exception as e:  # noqa: BLE001 - a case that raises failed
                results.append((name, [f"{type(e).__name__}: {e}"]))
        gw.stop()
        # Logged as admitted: 3 Python chats and 1 npm chat (an admitted models.list
        # is answered by celgate itself, without a line); refused: 4 Python, 1 npm.
        results += check_logs(gw, up, made=4, refused=5)
    except Exception as e:  # noqa: BLE001 - report anything as a failure with context
        fatal = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    finally:
        for p in reversed(procs):
            p.stop()

    passed = sum(1 for _, f in results if not f)
    failed = len(results) - passed + (1 if fatal else 0)
    log("\n== client keys results")
    for name, failures in results:
        log(f"  {'ok  ' if not failures else 'FAIL'} {name}")
        for f in failures:
            log("         - " + f)
    if fatal:
        log(f"  FAIL (aborted) {fatal}")
    if failed or os.environ.get("E2E_KEEP_TMP") == "1":
        log(f"\nlogs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"e2e: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
