"""Command line of the sweep scripts: python sweep/<experiment>.py [--profile demo|cpu|full] [...].

The scripts run app.sweep.main, which runs the sweep (here) and then writes its report (dashboards/).
"""

import argparse
import logging

from runrecord import ACCURACY, FULL_BUDGET_TAG, run_fields, trial_run_name
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
    parser.add_argument("--tracking-outage-s", type=float, default=600.0, metavar="SECONDS",
                        help="how long the tracking server may not answer (its records are held and retried, the "
                             "trials go on) before the sweep stops, resumable (default 600)")
    parser.add_argument("--quiet", action="store_true", help="no Tune progress table")
    return parser


def run(args: argparse.Namespace):
    """Validate and run (or resume) the sweep the arguments describe; returns (space, Tune results, record).
    Bad input raises slt.errors.InputError before Ray starts."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (DB migrations) are not ours to show
    space, info = load_space(args.space, args.profile, args.overrides)
    from sweep.engine import SweepOptions, run_sweep

    if args.tracking_outage_s <= 0:
        raise InputError("tracking_outage_s", f"{args.tracking_outage_s} is not allowed; allowed: a number of seconds > 0")
    results, record = run_sweep(space, info, SweepOptions(
        tracking_uri=args.tracking_uri, storage=args.storage, reports=None if args.no_report else args.reports,
        resume=args.resume, address=args.address, verbose=0 if args.quiet else 1,
        tracking_outage_s=args.tracking_outage_s))
    return space, results, record


def sitting_text(sittings: list[dict]) -> str:
    """'wall time 3.20 h over 2 sittings (1 resume)'; sittings a SIGKILL ended are counted, not timed."""
    from sweep.engine import sittings_wall_s

    wall = sittings_wall_s(sittings)
    untimed = sum(1 for s in sittings if not s.get("ended"))
    resumes = max(len(sittings) - 1, 0)
    return (f"wall time {wall / 3600:.2f} h over {len(sittings)} sitting{'s' * (len(sittings) != 1)} "
            f"({resumes} resume{'s' * (resumes != 1)}" + (f"; {untimed} untimed" if untimed else "") + ")")


def summarise(space, results, record) -> str:
    """Print the sweep's outcome; returns the line on its best trial (chosen on validation) or its front."""
    failed = [r for r in results if r.error]
    sittings = sitting_text(record.get("sittings", []))
    print(f"\nsweep {record['name']}: {len(results)} trials, {len(failed)} failed; {sittings}")
    full = [r for r in results if not r.error and r.metrics and r.metrics.get(FULL_BUDGET_TAG)]
    outcome = f"{len(results)} trials, {len(full)} at full budget, {len(failed)} failed; {sittings}"
    if not space.multi_objective and full:  # the best full-budget trial, chosen on validation
        objective = space.objectives[0]
        sign = 1 if objective.mode == "max" else -1
        best = max(full, key=lambda r: sign * r.metrics[objective.metric])
        print(f"best {objective.metric} = {best.metrics[objective.metric]:.4f} (its {ACCURACY} "
              f"{best.metrics[ACCURACY]:.4f}) with {run_fields(best.config)}")
        from slt.config import make_config
        from sweep.engine import searched_fields

        name = trial_run_name(make_config(**run_fields(best.config)), searched_fields(space))
        outcome += (f"; best on validation: run `{name}`, {objective.metric} {best.metrics[objective.metric]:.4f}, "
                    f"its {ACCURACY} {best.metrics[ACCURACY]:.4f}")
    elif space.multi_objective:
        outcome += "; the Pareto front of the full-budget trials is in the report's pareto.csv"
    print(f"Tune results:  {record['sweep_dir']}")
    print(f"MLflow:        {record['tracking_uri']} (experiment {space.name!r}, parent run {record['parent_run_id']})")
    print(f"Optuna study:  {record['optuna_storage']} (study {record['name']!r}; "
          f"optuna-dashboard {record['optuna_storage']} --host 127.0.0.1)")
    return outcome
