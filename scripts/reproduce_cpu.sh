#!/usr/bin/env bash
# The CPU-scale reproduction of docs/REPRODUCTION.md: the `cpu` profile of each search space, run
# through the sweep service (Ray Tune + Optuna + MLflow in ./mlruns), one sweep after another. The CNN
# sweeps use the whole CIFAR-10 subset in ../shared/data; patch_ratio's transformer sees it at 16x16
# (calibrated in docs/reproduction/calibration, rounds 5-8). (balance and pareto are beyond the paper's
# tables; run them by name.) Once decay_grid and decay_rate have both finished, the GP's λ is judged on
# the grid (slt report --against) in docs/reproduction/<decay_rate sweep>-vs-grid/.
# Together the sweeps take longer than one sitting. Ctrl-C stops the running sweep resumably, and
# running this script again continues each sweep with --resume, where the latest sweep of that space
# runs what its profile runs now. A finished sweep is then only reported, not run again.
# The engine refuses to resume a sweep whose profile now runs something else (for example the old
# 4-epoch profiles; a comment edited does not count); a new sweep is started instead. Each sweep's report lands in
# docs/reproduction/<sweep name>/, a new folder per sweep, so nothing recorded is overwritten.
# Cost on 2 CPU cores, two trials at a time, bf16, measured on pruning_ratio's trials: 19.5-29 min per
# spiking trial at T = 4 and 6-9.7 min per ANN-type one (the longer ones on a slower day); pruning_ratio took
# 7.50 h over 5 sittings, timestep 2.85 h over 2 (a T = 8 trial 30-49 min), finetune 2.06 h over 1,
# decay_grid 3.89 h over 4, decay_rate 1.70 h over 1 (15.5-17.8 min a trial) and patch_ratio 3.15 h over 4
# (a spiking transformer trial 15.5-22 min, an ANN-type one 4.9-6 min); about 21 h for all six.
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
RESULTS=${RESULTS:-ray_results}
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
  # stderr shown as it comes and kept in $errors (stdout passes through on fd 3); tee -i outlives a Ctrl-C
  # (sent to the whole foreground group), so the sweep's last words after it, the --resume line, are shown
  { "${run[@]}" --resume 2>&1 1>&3 | tee -i "$errors" >&2; status=${PIPESTATUS[0]}; } 3>&1 || true
  if [ "$status" -eq 2 ] && grep -q "^sweep: error: resume: " "$errors"; then
    if grep -q "^sweep: error: resume: no sweep " "$errors"; then
      echo "== $sweep: no sweep of this space to continue; a new one"
    else
      echo "== $sweep: its latest sweep cannot be continued (the error above says why: its profile in the" \
           "search-space file, or the --set overrides, now differ); a new one"
    fi
    "${run[@]}"
  elif [ "$status" -ne 0 ]; then
    exit "$status"
  fi
done
# the latest sweep of a space if it has finished (its last sitting's outcome in sweep.json): "NAME PARENT_RUN_ID"
# (read with grep, not $PY: the file is JSON written by sweep.tracking.write_json with indent=2, one key per line)
finished() {
  local latest
  latest=$(ls -d "$RESULTS/$1"-cpu-* 2>/dev/null | sort | tail -n 1 || true)
  [ -n "$latest" ] || return 0
  if [ "$(grep -o '"outcome": "[^"]*"' "$latest/sweep.json" | tail -n 1)" = '"outcome": "finished"' ]; then
    echo "$(basename "$latest") $(grep -o '"parent_run_id": "[0-9a-f]*"' "$latest/sweep.json" | cut -d'"' -f4)"
  fi
}
read -r search search_run <<< "$(finished decay_rate)" || true
read -r grid grid_run <<< "$(finished decay_grid)" || true
if [ -n "${search_run:-}" ] && [ -n "${grid_run:-}" ] && [ ! -e "docs/reproduction/$search-vs-grid" ]; then
  echo "== the λ search ($search) judged on the grid ($grid): docs/reproduction/$search-vs-grid"
  "$PY" -m app.cli report --experiment decay_rate --parent-run "$search_run" --against "decay_grid:$grid_run" \
    --out "docs/reproduction/$search-vs-grid"
fi
