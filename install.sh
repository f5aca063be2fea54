#!/usr/bin/env bash
# Install the project and its pinned dependencies into ./.venv (idempotent; no manual steps).
# torch==2.13.0 resolves to the CPU wheel where one is provided locally, to the normal build elsewhere;
# constraints.txt pins every transitive dependency so no package can pull a newer torch.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
.venv/bin/python -c "import torch, spikingjelly, ray, optuna, mlflow; print('installed: torch', torch.__version__, '| ray', ray.__version__, '| optuna', optuna.__version__, '| mlflow', mlflow.__version__)"
