#!/usr/bin/env bash
# The scaled reproduction of docs/REPRODUCTION.md: four sweeps with the `cpu` profiles on the CIFAR-10
# subset in ../shared/data, run one after another through the sweep service (Ray Tune + Optuna +
# MLflow in ./mlruns). Each sweep's report (runs/pareto CSVs, tables, PNG + HTML figures) lands in
# docs/reproduction/<sweep name>/ — a new folder per run, so nothing recorded is overwritten.
# About 75 minutes on 2 CPU cores. Pass sweep names to run only some: scripts/reproduce_cpu.sh timestep
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SWEEPS=("$@")
[ ${#SWEEPS[@]} -gt 0 ] || SWEEPS=(pruning_ratio patch_ratio decay_rate timestep)
for sweep in "${SWEEPS[@]}"; do
  echo "== $sweep (cpu profile) started $(date -u +%H:%M:%S)"
  "$PY" "sweep/$sweep.py" --profile cpu --quiet --reports docs/reproduction
done
