#!/usr/bin/env bash
# The CPU-scale reproduction of docs/REPRODUCTION.md: the `cpu` profile of each search space on the
# whole CIFAR-10 subset in ../shared/data, run through the sweep service (Ray Tune + Optuna + MLflow in
# ./mlruns), one sweep after another. Together they take longer than one sitting. Ctrl-C stops the
# running sweep resumably, and running this script again continues it (--resume) where it stopped.
# A sweep already finished is not run again. Each sweep's report lands in docs/reproduction/<sweep
# name>/, a new folder per sweep, so nothing recorded is overwritten.
# Measured cost on 2 CPU cores (two trials at a time, bf16): pruning_ratio about 4.5 h; the others are
# estimated from its trials (DESIGN sizes in search_spaces/*.yaml): timestep 2 h, decay_grid 3.4 h,
# decay_rate 1.7 h, finetune 1.5 h.
# Pass sweep names to run only some: scripts/reproduce_cpu.sh timestep decay_grid
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SWEEPS=("$@")
[ ${#SWEEPS[@]} -gt 0 ] || SWEEPS=(pruning_ratio timestep decay_grid decay_rate finetune patch_ratio)
for sweep in "${SWEEPS[@]}"; do
  resume=""
  if compgen -G "ray_results/$sweep-cpu-*/sweep.json" > /dev/null; then
    resume="--resume"  # continue (or, if it finished, only report) the latest sweep of this space
  fi
  echo "== $sweep (cpu profile${resume:+, continued}) started $(date -u +%H:%M:%S)"
  "$PY" "sweep/$sweep.py" --profile cpu --quiet --reports docs/reproduction $resume
done
