"""How the e2e runs each agent CLI: the invocations of issue 13, in one place.

Each CLI runs with a fresh `HOME` (no login, no history, no config but what is written
here), offline, pointed at `base_url` with `key` as its API key, from `workdir`, in its
non-interactive JSON mode. The CLIs are the pinned npm packages in `node_modules`.

    python agents.py record   # saves each CLI's first request under recorded/

`record` points every CLI at a recording tap with no backend (each sends one request,
gets a 400 and gives up) and writes the request, keys masked, to `recorded/NAME.json`:
the fixtures the gateway's tests use for what these clients really send.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = HERE / "node_modules" / ".bin"
GEMINI_MODEL = "gemini-2.5-flash"


@dataclass
class Agent:
    name: str
    package: str

    def command(self, base_url: str, prompt: str, home: Path) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError


def base_env(home: Path) -> dict[str, str]:
    """PATH and a fresh HOME; nothing from the caller that steers a CLI or a proxy."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "CI": "1",
    }


class Claude(Agent):
    def command(self, base_url: str, prompt: str, home: Path, key: str = "sk-ant-client"):
        env = base_env(home) | {
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": key,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
        return [str(BIN / "claude"), "-p", prompt, "--output-format", "json",
                "--max-turns", "4"], env


class Codex(Agent):
    def command(self, base_url: str, prompt: str, home: Path, key: str = "sk-codex-client"):
        env = base_env(home) | {"CODEX_HOME": str(home / ".codex"), "CELGATE_E2E_KEY": key}
        (home / ".codex").mkdir(parents=True, exist_ok=True)
        return [str(BIN / "codex"), "exec", "--skip-git-repo-check", "--ephemeral", "--json",
                "-c", "model_provider=x",
                "-c", f'model_providers.x.base_url="{base_url}/v1"',
                "-c", "model_providers.x.name=celgate",
                "-c", "model_providers.x.env_key=CELGATE_E2E_KEY",
                "-c", "model_providers.x.wire_api=responses",
                "-c", "model_providers.x.request_max_retries=0",
                "-c", "model_providers.x.stream_max_retries=0",
                prompt], env


class Gemini(Agent):
    def command(self, base_url: str, prompt: str, home: Path, key: str = "gm-client-key"):
        settings = home / ".gemini" / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "privacy": {"usageStatisticsEnabled": False},
            "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        }))
        env = base_env(home) | {
            "GEMINI_API_KEY": key,
            "GOOGLE_GEMINI_BASE_URL": base_url,
            "GEMINI_CLI_TRUST_WORKSPACE": "true",
        }
        return [str(BIN / "gemini"), "-m", GEMINI_MODEL, "-p", prompt,
                "--output-format", "json"], env


AGENTS = {
    "claude-code": Claude("claude-code", "@anthropic-ai/claude-code"),
    "codex": Codex("codex", "@openai/codex"),
    "gemini-cli": Gemini("gemini-cli", "@google/gemini-cli"),
}


def run(agent: Agent, base_url: str, prompt: str, workdir: Path, home: Path,
        timeout: float = 120, **kw: str) -> subprocess.CompletedProcess[str]:
    argv, env = agent.command(base_url, prompt, home, **kw)
    return subprocess.run(argv, env=env, cwd=workdir, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def record() -> int:
    from tap import Tap

    out = HERE / "recorded"
    out.mkdir(exist_ok=True)
    for name, agent in AGENTS.items():
        tap = Tap(None)
        with tempfile.TemporaryDirectory(prefix=f"celgate-rec-{name}-") as tmp:
            home, work = Path(tmp) / "home", Path(tmp) / "work"
            home.mkdir()
            work.mkdir()
            try:
                p = run(agent, tap.url, "Say hello", work, home, timeout=90)
                status = f"exit {p.returncode}"
            except subprocess.TimeoutExpired:
                status = "timed out"
        tap.close()
        reqs = tap.take()
        print(f"{name}: {status}, {len(reqs)} request(s): "
              + ", ".join(f"{r.method} {r.path}" for r in reqs), flush=True)
        if reqs:
            first = reqs[0].masked()
            first["client"] = f"{agent.package}@{installed_version(agent.package)}"
            (out / f"{name}.json").write_text(json.dumps(first, indent=1) + "\n")
    return 0


def installed_version(package: str) -> str:
    meta = HERE / "node_modules" / package / "package.json"
    return json.loads(meta.read_text())["version"]


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    if sys.argv[1:] == ["record"]:
        sys.exit(record())
    print(__doc__)
    sys.exit(2)
