"""Command line of the sweep scripts: python sweep/<experiment>.py [--profile demo|cpu|full] [...]."""

import argparse
import logging
import sys

from slt.errors import InputError
from sweep.space import PROFILES, load_space


def build_parser(default_space: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=f"Run the {default_space} sweep (Ray Tune + Optuna + MLflow).")
    parser.add_argument("--profile", default="demo", help=f"scale of the experiment [{', '.join(PROFILES)}]")
    parser.add_argument("--space", default=default_space, help="another search-space YAML file (or bundled name)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field, e.g. --set num_samples=4 --set base.epochs=3 (repeatable)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, "
                                                             "else sqlite:///./mlruns/mlflow.db)")
    parser.add_argument("--storage", default=None, help="Tune storage folder shared by all nodes (default ./ray_results)")
    parser.add_argument("--resume", action="store_true", help="continue the latest sweep of this space and profile")
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: start Ray on this machine)")
    parser.add_argument("--reports", default="reports", help="folder for the sweep's report (default ./reports)")
    parser.add_argument("--no-report", action="store_true", help="skip the report (figures, tables, Pareto CSV)")
    parser.add_argument("--quiet", action="store_true", help="no Tune progress table")
    return parser


def main(default_space: str, argv: list[str] | None = None) -> int:
    args = build_parser(default_space).parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (DB migrations) are not ours to show
    try:
        space, info = load_space(args.space, args.profile, args.overrides)
        from sweep.engine import SweepOptions, run_sweep

        results, record = run_sweep(space, info, SweepOptions(
            tracking_uri=args.tracking_uri, storage=args.storage, resume=args.resume, address=args.address,
            verbose=0 if args.quiet else 1))
    except InputError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    summarise(space, results, record)
    if not args.no_report:
        from pathlib import Path

        from dashboards.report import write_report

        report = write_report(space.name, record["tracking_uri"], Path(args.reports).resolve() / record["name"],
                              record["parent_run_id"])
        print(f"Pareto CSV:    {report['pareto_csv']}")
        print(f"Report:        {report['index']} ({len(report['figures'])} figures; also in MLflow under report/)")
    print(f"MLflow UI:     mlflow ui --backend-store-uri {record['tracking_uri']} --host 127.0.0.1 --port 5000")
    return 0


def summarise(space, results, record) -> None:
    failed = [r for r in results if r.error]
    print(f"\nsweep {record['name']}: {len(results)} trials, {len(failed)} failed")
    if not space.multi_objective and len(failed) < len(results):
        objective = space.objectives[0]
        best = results.get_best_result(metric=objective.metric, mode=objective.mode)
        from trainables import run_fields

        print(f"best {objective.metric} = {best.metrics[objective.metric]:.4f} with {run_fields(best.config)}")
    print(f"Tune results:  {record['sweep_dir']}")
    print(f"MLflow:        {record['tracking_uri']} (experiment {space.name!r}, parent run {record['parent_run_id']})")
    print(f"Optuna study:  {record['optuna_storage']} (study {record['name']!r}; "
          f"optuna-dashboard {record['optuna_storage']} --host 127.0.0.1)")


if __name__ == "__main__":
    sys.exit(main("decay_rate"))
