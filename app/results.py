"""The result commands of `slt`: export pareto, report, dashboard optuna (they read MLflow, never Ray)."""

import argparse
import tempfile
from pathlib import Path

import runrecord
from slt.errors import InputError


def cmd_export_pareto(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from dashboards.pareto import pareto_table, parse_objectives
    from dashboards.runs import load_runs
    uri = args.tracking_uri or runrecord.default_tracking_uri()
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


def cmd_report(args: argparse.Namespace) -> int:
    from dashboards.report import write_report

    against = None
    if args.against is not None:
        experiment, _, parent = args.against.partition(":")
        against = (experiment, parent or None)
    report = write_report(args.experiment, args.tracking_uri or runrecord.default_tracking_uri(), args.out,
                          args.parent_run, against=against)
    print(f"report: {report['index']} ({len(report['figures'])} figures, "
          f"{', '.join('Table ' + t['table'] for t in report['tables']) or 'no paper table'}); "
          f"Pareto CSV: {report['pareto_csv']}; logged to parent run {report['parent_run_id']} under report/")
    return 0


def cmd_dashboard_optuna(args: argparse.Namespace) -> int:
    import optuna
    import optuna_dashboard

    storage = args.storage or runrecord.optuna_storage(runrecord.default_tracking_uri(), Path("ray_results"))
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception as err:  # missing file, not an Optuna database, unreachable server
        raise InputError("storage", f"cannot open Optuna storage {storage} ({type(err).__name__})") from None
    if args.study not in names:
        raise InputError("study", f"no study {args.study!r} in {storage}; studies: {', '.join(names) or 'none'}")
    study_id = names.index(args.study) + 1
    print(f"optuna-dashboard on http://{args.host}:{args.port}/dashboard/studies/{study_id} (Ctrl-C to stop)")
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0


def add_commands(commands) -> None:
    """Add export, report and dashboard to the `slt` parser's subcommands."""
    export = commands.add_parser("export", help="export a sweep's results from MLflow")
    what = export.add_subparsers(dest="what", required=True)
    pareto = what.add_parser("pareto", help="every trial with is_pareto and its front rank, as CSV")
    pareto.add_argument("--experiment", required=True, help="MLflow experiment (the search space name)")
    pareto.add_argument("--parent-run", default=None, help="a sweep's parent run id (default: the latest sweep)")
    pareto.add_argument("--tracking-uri", default=None, help="default $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db")
    pareto.add_argument("--objectives", default=runrecord.objectives_text(runrecord.PARETO_OBJECTIVES), help="METRIC:max|min,...")
    pareto.add_argument("--include-early-stopped", action="store_true",
                        help="also rank trials that did not run their full budget (ASHA-stopped)")
    pareto.add_argument("--out", required=True, help="CSV file to write (must not exist)")
    pareto.set_defaults(func=cmd_export_pareto)

    report = commands.add_parser("report", help="a sweep's figures, paper tables and Pareto CSV with an index.html")
    report.add_argument("--experiment", required=True, help="MLflow experiment (the search space name)")
    report.add_argument("--parent-run", default=None, help="a sweep's parent run id (default: the latest sweep)")
    report.add_argument("--tracking-uri", default=None, help="default $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db")
    report.add_argument("--out", required=True, help="a new folder for the report")
    report.add_argument("--against", default=None, metavar="EXPERIMENT[:PARENT_RUN]",
                        help="a grid sweep over the one field this sweep searches (its latest sweep, or the given "
                             "parent run): the claims judge the search's pick against the grid's cells")
    report.set_defaults(func=cmd_report)

    dashboard = commands.add_parser("dashboard", help="open a dashboard server on 127.0.0.1")
    which = dashboard.add_subparsers(dest="which", required=True)
    optuna_parser = which.add_parser("optuna", help="optuna-dashboard for a sweep's study")
    optuna_parser.add_argument("--study", required=True, help="the sweep's name (its Tune/MLflow parent run name)")
    optuna_parser.add_argument("--storage", default=None, help="default: optuna.db beside the default tracking "
                               "store (sqlite:///./mlruns/optuna.db)")
    optuna_parser.add_argument("--host", default="127.0.0.1")
    optuna_parser.add_argument("--port", type=int, default=8080)
    optuna_parser.set_defaults(func=cmd_dashboard_optuna)
