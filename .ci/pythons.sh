#!/usr/bin/env bash
# The manager on the oldest and newest Pythons pyproject claims (tests/pythons/smoke.py on each).
#
# Each Python gets a venv of its own, cached at .venv-py3.X (git-ignored), holding the manager only:
# mdtui's declared dependencies less the engine's (torch, torchvision, scikit-learn: the manager
# never imports them; the import-linter contract and smoke.py check that), under the test pins of
# tests/constraints.txt, then mdtui itself with --no-deps. A venv is rebuilt only when those
# requirements or the constraints change (a stamp holds their hash), so a warm CI spends seconds here.
#
# Usage: .ci/pythons.sh [PYTHON...]   (default: the pyenv 3.10 and 3.13 builds of these machines;
# MDTUI_SMOKE_PYTHONS overrides the default list, space-separated)
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE_ONLY="torch torchvision scikit-learn"
default_pythons="$HOME/.pyenv/versions/3.10.13/bin/python $HOME/.pyenv/versions/3.13.0/bin/python"
read -r -a pythons <<<"${MDTUI_SMOKE_PYTHONS:-$default_pythons}"
(($#)) && pythons=("$@")

# The manager's requirements, read from pyproject (one source of truth) by the Python running CI.
manager_requirements() {
    python - "$ENGINE_ONLY" <<'EOF'
import re, sys, tomllib
engine_only = set(sys.argv[1].split())
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    name = re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0].lower()
    if name not in engine_only:
        print(dep)
EOF
}

stamp_of() { { manager_requirements; cat tests/constraints.txt; } | sha256sum | cut -d' ' -f1; }

status=0
for py in "${pythons[@]}"; do
    if [[ ! -x "$py" ]]; then
        echo ".ci/pythons.sh: $py is not installed (pyenv install it, or set MDTUI_SMOKE_PYTHONS)" >&2
        exit 2
    fi
    version="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    venv=".venv-py$version"
    started=$SECONDS
    if [[ "$(cat "$venv/.mdtui-stamp" 2>/dev/null)" != "$(stamp_of)" ]]; then
        rm -rf "$venv"
        "$py" -m venv "$venv"
        mapfile -t requirements < <(manager_requirements)
        # (this box's pip config names local indexes that may be absent: their warnings are noise)
        "$venv/bin/python" -m pip install -q -c tests/constraints.txt "${requirements[@]}" 2> >(grep -v "is ignored" >&2)
        "$venv/bin/python" -m pip install -q --no-deps -e . 2> >(grep -v "is ignored" >&2)
        stamp_of >"$venv/.mdtui-stamp"
    fi
    if "$venv/bin/python" tests/pythons/smoke.py .; then
        echo "python $version smoke: $((SECONDS - started)) s"
    else
        echo ".ci/pythons.sh: the manager smoke failed on Python $version ($py)" >&2
        status=1
    fi
done
exit $status
