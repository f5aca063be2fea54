#!/usr/bin/env bash
# Install the project and its pinned dependencies into ./.venv (idempotent; no manual steps).
# torch==2.13.0 resolves to the CPU wheel where one is provided locally, to the normal build elsewhere;
# constraints.txt pins every transitive dependency so no package can pull a newer torch.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}  # pyproject.toml requires 3.11: PYTHON=python3.11 ./install.sh where python3 is another
version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "none (it does not run)"; }
if [ ! -x .venv/bin/python ]; then
  if [ "$(version "$PYTHON")" != 3.11 ]; then
    echo "install.sh: error: PYTHON: $PYTHON is Python $(version "$PYTHON"); allowed: a Python 3.11 (PYTHON=python3.11 ./install.sh)" >&2
    exit 2
  fi
  "$PYTHON" -m venv .venv
elif [ "$(version .venv/bin/python)" != 3.11 ]; then
  echo "install.sh: error: .venv: it has Python $(version .venv/bin/python); allowed: 3.11 (remove .venv, then PYTHON=python3.11 ./install.sh)" >&2
  exit 2
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
.venv/bin/python -c "import torch, spikingjelly, ray, optuna, mlflow; print('installed: torch', torch.__version__, '| ray', ray.__version__, '| optuna', optuna.__version__, '| mlflow', mlflow.__version__)"
