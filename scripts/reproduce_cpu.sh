#!/usr/bin/env bash
# The CPU-scale reproduction of docs/REPRODUCTION.md: the `cpu` profile of each search space, run
# through the sweep service (Ray Tune + Optuna + MLflow in ./mlruns), one sweep after another. The CNN
# sweeps use the whole CIFAR-10 subset in ../shared/data. patch_ratio's transformer profile is not
# calibrated yet: it is still the 2,000-image, 3-epoch one.
# Together the sweeps take longer than one sitting. Ctrl-C stops the running sweep resumably, and
# running this script again continues each sweep with --resume, where the latest sweep of that space
# was started from the same search-space file. A finished sweep is then only reported, not run again.
# The engine refuses to resume a sweep started from another version of the file (for example the old
# 4-epoch profiles); a new sweep is started instead. Each sweep's report lands in
# docs/reproduction/<sweep name>/, a new folder per sweep, so nothing recorded is overwritten.
# Cost on 2 CPU cores, two trials at a time, bf16:
#   pruning_ratio: about 4.5 h, measured on its trials (14-15 min per spiking trial, 4-5 min per ANN one);
#   estimated from those trials: timestep 2 h, decay_grid 3.4 h, decay_rate 1.7 h, finetune 1.5 h.
# A new checkout has no ray_results/ and no mlruns/: the sweeps stopped in an earlier checkout travel in
# git as the archives in docs/reproduction/carried/ (python -m sweep.carry pack, see docs/REPRODUCTION.md;
# named reproduction-YYYYMMDD-HHMM.tar.xz): the last by name is unpacked first when there is no MLflow
# store here yet, into a checkout at the path it was packed in.
# Pass sweep names to run only some: scripts/reproduce_cpu.sh timestep decay_grid
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CARRIED=${CARRIED:-docs/reproduction/carried}
TRACKING_DB=${TRACKING_DB:-mlruns/mlflow.db}
carried=$(ls "$CARRIED"/*.tar.xz 2>/dev/null | sort | tail -n 1 || true)  # the last by name: name them by date
if [ -n "$carried" ] && [ ! -e "$TRACKING_DB" ]; then
  echo "== unpacking the sweeps carried in $carried"
  "$PY" -m sweep.carry unpack "$carried" --root "$PWD"  # refused unless it was packed in this checkout's path
elif [ -n "$carried" ]; then
  echo "== $TRACKING_DB exists: the sweeps here are continued, $carried is not unpacked"
fi
SWEEPS=("$@")
[ ${#SWEEPS[@]} -gt 0 ] || SWEEPS=(pruning_ratio timestep decay_grid decay_rate finetune patch_ratio)
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
for sweep in "${SWEEPS[@]}"; do
  run=("$PY" "sweep/$sweep.py" --profile cpu --quiet --reports docs/reproduction)
  echo "== $sweep (cpu profile) started $(date -u +%H:%M:%S)"
  # stderr shown as it comes and kept in $errors (stdout passes through on fd 3)
  { "${run[@]}" --resume 2>&1 1>&3 | tee "$errors" >&2; status=${PIPESTATUS[0]}; } 3>&1 || true
  if [ "$status" -eq 2 ] && grep -q "^sweep: error: resume: " "$errors"; then
    echo "== $sweep: no sweep of this space to continue; a new one"
    "${run[@]}"
  elif [ "$status" -ne 0 ]; then
    exit "$status"
  fi
done
