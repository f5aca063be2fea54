"""The sweep scripts' main: run a sweep (sweep/), then write its report (dashboards/)."""

import sys
from pathlib import Path

from slt.errors import InputError
from sweep import cli


def main(default_space: str, argv: list[str] | None = None) -> int:
    args = cli.build_parser(default_space).parse_args(argv)
    try:
        space, results, record = cli.run(args)
    except InputError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    cli.summarise(space, results, record)
    if not args.no_report:
        from dashboards.report import write_report

        report = write_report(space.name, record["tracking_uri"], Path(args.reports).resolve() / record["name"],
                              record["parent_run_id"])
        print(f"Pareto CSV:    {report['pareto_csv']}")
        print(f"Report:        {report['index']} ({len(report['figures'])} figures; also in MLflow under report/)")
    print(f"MLflow UI:     mlflow ui --backend-store-uri {record['tracking_uri']} --host 127.0.0.1 --port 5000")
    return 0
