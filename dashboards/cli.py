"""The `slt` command: the science commands of slt.cli plus the MLflow-backed ones (export).

slt/ never imports MLflow, so the console script starts here and extends slt's parser.
"""

import argparse
import sys
import tempfile
from pathlib import Path

from slt import cli as science
from slt.errors import InputError


def cmd_export_pareto(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from dashboards.pareto import pareto_table, parse_objectives
    from dashboards.runs import load_runs
    from sweep.tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    out = Path(args.out)
    if out.exists():
        raise InputError("out", f"{out} already exists; choose a new file (nothing recorded is overwritten)")
    runs, parent = load_runs(args.experiment, uri, args.parent_run)
    if runs.empty:
        raise InputError("experiment", f"sweep {parent.info.run_name!r} has no trial runs yet")
    objectives = parse_objectives(args.objectives, runs.columns)
    table = pareto_table(runs, objectives, include_early_stopped=args.include_early_stopped)
    table.to_csv(out, index=False)
    with tempfile.TemporaryDirectory() as scratch:  # logged under a name that says what it ranks
        named = Path(scratch) / f"pareto_{'_'.join(n for n, _ in objectives)}.csv"
        table.to_csv(named, index=False)
        MlflowClient(uri).log_artifact(parent.info.run_id, str(named), artifact_path="pareto")
    front = table[table["is_pareto"]]
    print(f"{len(table)} trials, {int(table['front_rank'].notna().sum())} ranked ({table['ranked_on'].iloc[0]}), "
          f"{len(front)} on the front -> {out} (also logged to parent run {parent.info.run_id} under pareto/)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = science.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # argparse has no API
    export = commands.add_parser("export", help="export a sweep's results from MLflow")
    what = export.add_subparsers(dest="what", required=True)
    pareto = what.add_parser("pareto", help="every trial with is_pareto and its front rank, as CSV")
    pareto.add_argument("--experiment", required=True, help="MLflow experiment (the search space name)")
    pareto.add_argument("--parent-run", default=None, help="a sweep's parent run id (default: the latest sweep)")
    pareto.add_argument("--tracking-uri", default=None, help="default $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db")
    pareto.add_argument("--objectives", default="accuracy:max,energy_mj:min", help="METRIC:max|min,...")
    pareto.add_argument("--include-early-stopped", action="store_true",
                        help="also rank trials that did not run their full budget (ASHA-stopped)")
    pareto.add_argument("--out", required=True, help="CSV file to write (must not exist)")
    pareto.set_defaults(func=cmd_export_pareto)
    return parser


def main(argv: list[str] | None = None) -> int:
    return science.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
