"""The `slt` console script: the science commands (app.science) and the result commands (app.results)."""

import argparse
import sys

from app import results, science
from slt.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slt", description="Lottery tickets in spiking neural networks.")
    commands = parser.add_subparsers(dest="command", required=True)
    science.add_commands(commands)
    results.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse and run a command; bad input is one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as err:
        print(f"slt: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
