#!/usr/bin/env bash
# End-to-end tests of celgate driven by the official `openai` Python SDK and the
# official `openai` npm package, and the anthropic, openai (Responses) and google-genai
# SDKs' Messages / Responses / generateContent calls: against a real Arize Phoenix
# (test_phoenix.py, compared with OpenInference's own instrumentations), with
# client keys on (test_client_keys.py), and streams the SDK closes right after `[DONE]`
# (test_sdk_stream_close.py); the official anthropic, openai (Responses) and google-genai
# SDKs (test_protocols.py) and the Claude Code, Codex and Gemini CLIs (test_agents.py)
# through celgate to the scripted upstream. See README.md here.
#
#   bash tests/e2e/run.sh
#
# Needs: the Rust toolchain (unless CELGATE_BIN is given), Python >= 3.11 with venv and
# pip, Node >= 20 with npm, and access to PyPI and the npm registry on the first run.
# Installs into tests/e2e/.venv, tests/e2e/.venv-protocols and tests/e2e/node_modules,
# reused while requirements.txt / requirements-protocols.txt / package-lock.json are
# unchanged.
#
# Environment:
#   CELGATE_BIN   use this celgate binary instead of building one (cargo build -p celgate)
#   PYTHON        the interpreter for the venv (default: python3.11, else python3)
#   E2E_KEEP_TMP  1 = keep the temp dir with logs and Phoenix's database
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
sha() { sha256sum | cut -d' ' -f1; }

# --- Python venv (cached: rebuilt only when requirements.txt or the interpreter change)
if [[ -z "${PYTHON:-}" ]]; then
  if command -v python3.11 >/dev/null; then PYTHON=python3.11; else PYTHON=python3; fi
fi
"$PYTHON" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 15) else 1)' || {
  echo "e2e: $PYTHON is $("$PYTHON" --version 2>&1); arize-phoenix needs Python 3.11 to 3.14" >&2
  exit 2
}
# One venv per requirements file: .venv (Phoenix, openai; requirements.txt) and
# .venv-protocols (the current anthropic, google-genai, openai SDKs, which conflict with
# Phoenix's pins; requirements-protocols.txt).
ensure_venv() { # VENV REQUIREMENTS
  local venv="$1" reqs="$2" stamp="$1/.celgate-requirements.sha256" want t
  want="$({ cat "$reqs"; "$PYTHON" -VV; command -v "$PYTHON"; } | sha)"
  t=$(now)
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "== python venv: up to date ($venv)"
  else
    echo "== python venv: installing $reqs into $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      -r "$reqs"
    echo "$want" >"$stamp"
    echo "   installed in $(since "$t")"
  fi
}
venv="$here/.venv"
ensure_venv "$venv" requirements.txt
pvenv="$here/.venv-protocols"
ensure_venv "$pvenv" requirements-protocols.txt

# --- Node packages (cached: npm ci only when package-lock.json changed)
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if ((node_major < 20)); then
  echo "e2e: node $(node --version) is too old; need Node >= 20" >&2
  exit 2
fi
nstamp="$here/node_modules/.celgate-lock.sha256"
nwant="$({ cat package-lock.json; node --version; } | sha)"
t=$(now)
if [[ -f "$nstamp" && "$(cat "$nstamp")" == "$nwant" ]]; then
  echo "== node_modules: up to date"
else
  echo "== node_modules: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$nwant" >"$nstamp"
  echo "   installed in $(since "$t")"
fi

# --- celgate
if [[ -z "${CELGATE_BIN:-}" ]]; then
  t=$(now)
  echo "== building celgate (cargo build -p celgate --locked)"
  (cd "$root" && cargo build -p celgate --locked)
  target_dir="$(cd "$root" && cargo metadata --no-deps --format-version 1 |
    "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  CELGATE_BIN="$target_dir/debug/celgate"
  echo "   built in $(since "$t")"
fi
CELGATE_BIN="$(cd "$(dirname "$CELGATE_BIN")" && pwd)/$(basename "$CELGATE_BIN")"
export CELGATE_BIN

# Each script runs whatever the others say and prints its own `e2e: N passed, M
# failed` line (.ci/run sums them); the exit status is the worst of theirs.
status=0
for script in test_phoenix.py test_client_keys.py test_sdk_stream_close.py \
  test_protocols.py test_agents.py; do
  py="$venv/bin/python"
  case "$script" in test_protocols.py | test_agents.py) py="$pvenv/bin/python" ;; esac
  echo "== running $script"
  t=$(now)
  rc=0
  "$py" -u "$here/$script" || rc=$?
  echo "   $script took $(since "$t")"
  if ((rc > status)); then status=$rc; fi
done
exit "$status"
