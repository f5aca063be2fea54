"""The benchmarks' recordings: CSV files that only grow (rows already there are kept; a recording goes on)."""

import csv
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    """Every row of the recording at `path` as a dict of strings (none when it does not exist yet)."""
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def append_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Append `rows` to the recording at `path`, writing its header first when the file is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if new_file:
            writer.writeheader()
        writer.writerows(rows)
