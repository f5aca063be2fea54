"""The sweep scripts' main: run a sweep (sweep/), then write its report (dashboards/)."""

import shlex
import sys
from pathlib import Path

from slt.errors import InputError
from sweep import cli


def resume_command(argv: list[str]) -> str:
    """The command line that continues this sweep: the one that started it, with --resume."""
    args = [a for a in argv if a != "--resume"]
    return shlex.join([sys.executable, sys.argv[0], *args, "--resume"])


def main(default_space: str, argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = cli.build_parser(default_space).parse_args(argv)
    from sweep.engine import SweepInterrupted
    from sweep.tracking import TrackingOutage, in_chain

    try:
        space, results, record = cli.run(args)
    except InputError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    except SweepInterrupted as stop:
        print(f"sweep {stop.record['name']}: interrupted; the parent run ended KILLED, the running trials keep "
              f"their last checkpoints.\nContinue with: {resume_command(argv)}", file=sys.stderr, flush=True)
        return _shut_ray_down()
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        print(f"sweep: stopped at once. Continue with: {resume_command(argv)}", file=sys.stderr)
        return 130
    except Exception as err:  # Tune wraps what a callback raised: find a tracking outage in the chain
        outage = in_chain(err, lambda e: isinstance(e, TrackingOutage))
        if outage is None:
            raise
        print(f"sweep: error: tracking_uri: {outage}", file=sys.stderr)
        return 1
    outcome = cli.summarise(space, results, record)
    folder = None if args.no_report else Path(args.reports).resolve() / record["name"]
    _describe(space, record, outcome, folder)
    if folder is not None:
        try:
            _report(space, record, folder)
        except Exception as err:  # the sweep is complete and recorded; only its report is missing
            from sweep.tracking import first_line

            print(f"sweep: error: report: not written ({type(err).__name__}: {first_line(err)}); "
                  f"write it later with: slt report --experiment {space.name} --parent-run {record['parent_run_id']} "
                  f"--tracking-uri {record['tracking_uri']} --out {folder}", file=sys.stderr)
            return 1
    import runrecord

    uri = record["tracking_uri"]
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        print(f"MLflow UI:     open {runrecord.ui_url(uri, record['experiment_id'], record['name'])}")
    else:
        print(f"MLflow UI:     mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000\n"
              f"               then open {runrecord.ui_url('http://127.0.0.1:5000', record['experiment_id'], record['name'])}")
    return 0


def _describe(space, record: dict, outcome: str, report: Path | None) -> None:
    """The parent run's description in MLflow: the sweep, its outcome and where its report is."""
    from mlflow.tracking import MlflowClient

    import runrecord
    from sweep.tracking import first_line, sweep_description

    text = sweep_description(space, record["space"], outcome, str(report / "index.html") if report else None)
    try:
        MlflowClient(record["tracking_uri"]).set_tag(record["parent_run_id"], runrecord.NOTE_TAG, text)
    except Exception as err:  # the sweep is recorded; only its description is missing
        print(f"sweep: warning: the parent run's description was not written ({first_line(err)})", file=sys.stderr)


def _shut_ray_down() -> int:
    """Stop the private Ray now, not in an exit hook, so that a second Ctrl-C during it ends quietly."""
    try:
        import ray

        ray.shutdown()
    except KeyboardInterrupt:
        print("sweep: stopped at once", file=sys.stderr)
    return 130


def _report(space, record: dict, folder: Path) -> None:
    """Write the sweep's report, unless a complete one is there already (a resumed finished sweep): a
    folder in place is always complete (dashboards.report writes elsewhere and moves it), and is kept."""
    if folder.is_dir() and any(folder.iterdir()):
        pareto = folder / "pareto.csv"
        print(f"Pareto CSV:    {pareto if pareto.is_file() else 'none (no energy or validation accuracy)'}")
        print(f"Report:        {folder / 'index.html'} (written before; kept as it is)")
        return
    from dashboards.report import write_report

    report = write_report(space.name, record["tracking_uri"], folder, record["parent_run_id"])
    print(f"Pareto CSV:    {report['pareto_csv']}")
    print(f"Report:        {report['index']} ({len(report['figures'])} figures; also in MLflow under report/)")

