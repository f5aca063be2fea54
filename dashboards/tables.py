"""The paper's Table II (transformers) and Table III (CNNs), regenerated from a sweep's runs.

Each cell is the mean ± std of test accuracy (%) over seeds of finished, full-budget runs, with n and
the epochs they trained (every row of a table should show the same budget), and the paper's value
beside it (DESIGN §4). Nothing here is chosen by accuracy. Written as CSV (long format), Markdown and
LaTeX.
"""

import math

import pandas as pd

from dashboards.runs import budget, equals, one_configuration, reads, setting_text
from runrecord import ACCURACY, comparable

DATASETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "dvs128-gesture": "DVS128 Gesture",
            "cifar10-dvs": "CIFAR10-DVS"}

# (label, method, paper accuracies per dataset for (model A, model B)), in the paper's row order.
TABLES = {
    "III": {
        "models": {"vgg9": "VGG-9", "resnet19": "ResNet-19"},
        "rows": [
            ("ANN", "ann", [88.10, 92.05, 68.64, 76.74, 92.92, 94.83, 78.65, 80.14]),
            ("SNN", "snn", [87.71, 91.78, 67.94, 75.66, 92.78, 93.27, 78.41, 80.06]),
            ("LTs", "lt", [87.73, 91.87, 67.56, 75.62, 92.43, 93.83, 77.92, 80.02]),
            ("SLTs", "slt", [87.67, 91.66, 65.81, 74.76, 91.73, 91.77, 77.82, 79.41]),
            ("MPLTs", "mplt", [87.52, 90.26, 66.74, 72.01, 87.12, 89.98, 77.01, 78.66]),
            ("MPSLTs", "mpslt", [87.76, 91.82, 67.22, 72.43, 91.70, 93.22, 77.94, 79.71]),
        ],
    },
    "II": {
        "models": {"spikformer-tiny": "TINY", "spikformer-small": "SMALL"},
        "ratios": {"p": 0.4, "q": 0.3},  # the paper's setting: used when a sweep ran it
        "rows": [
            ("ViT", "ann", [91.71, 92.36, 74.37, 75.12, 95.96, 97.12, 78.43, 80.01]),
            ("Spiking-ViT", "snn", [90.81, 92.17, 73.84, 75.43, 95.13, 96.99, 77.86, 79.77]),
            ("PEPSp-LTs", "pepsp-lt", [90.04, 91.76, 74.31, 75.22, 94.89, 96.74, 76.61, 78.42]),
            ("PEPSp-SLTs", "pepsp-slt", [89.75, 91.98, 73.68, 74.86, 95.37, 96.88, 77.14, 78.91]),
            ("MultiSp-LTs", "multisp-lt", [89.87, 91.44, 73.21, 74.09, 94.27, 96.22, 76.69, 78.02]),
            ("MultiSp-SLTs", "multisp-slt", [90.21, 91.98, 73.82, 74.89, 94.40, 96.39, 77.03, 78.43]),
        ],
    },
}


def _columns(table: str) -> list[tuple[str, str]]:
    """(dataset, model) pairs in the paper's column order."""
    return [(dataset, model) for dataset in DATASETS for model in TABLES[table]["models"]]


def paper_table(runs: pd.DataFrame, table: str, *, p: float | None = None, q: float | None = None) -> pd.DataFrame:
    """Long format, one row per (method, dataset, model) cell: n, mean, std (accuracy in %), paper value.

    A cell pools the seeds of one configuration (dashboards.runs.one_configuration): ticket rows use the
    runs at pruning ratio `p` (default: the paper's p for the table where the runs have it, else the run
    default's, else the p most runs of that method used), MultiSp rows those at patch ratio `q` likewise
    (Table II: p = 0.4, q = 0.3), and any other field a method's runs differ in (T, λ, ...) is held at its
    default where the runs have it. The p and q used are columns of the result, the other choices `setting`.
    """
    done = comparable(runs)
    if p is not None:  # an explicit ratio selects strictly: no runs there, an empty cell
        done = done[~reads(done, "p") | equals(done["p"], p)]
    if q is not None:
        done = done[~reads(done, "q") | equals(done["q"], q)]
    done, chosen = one_configuration(done, TABLES[table].get("ratios", {}), by=("method", "dataset", "model"))
    rows = []
    for label, method, paper in TABLES[table]["rows"]:
        mine = done[done["method"] == method]
        for (dataset, model), paper_value in zip(_columns(table), paper):
            cells = mine[(mine["dataset"] == dataset) & (mine["model"] == model)]
            picks = chosen.get(f"{method} {dataset} {model}", {})
            used_p = _ratio(cells, "p") if method not in ("ann", "snn") else None
            used_q = _ratio(cells, "q") if method.startswith("multisp") else None
            cell = 100 * cells[ACCURACY]
            rows.append({"table": table, "row": label, "method": method, "dataset": dataset, "model": model,
                         "n": len(cell), "epochs": budget(cells),
                         "mean": cell.mean() if len(cell) else math.nan,
                         "std": cell.std(ddof=1) if len(cell) > 1 else math.nan,  # one run has no spread
                         "paper": paper_value, "p": used_p, "q": used_q,
                         "setting": setting_text({k: v for k, v in picks.items() if k not in ("p", "q")})})
    long = pd.DataFrame(rows)
    long.attrs["chosen"] = chosen
    return long


def _ratio(rows: pd.DataFrame, column: str) -> float | None:
    """The one p (or q) of a method's cells, None where it has no runs."""
    values = rows[column].dropna().unique() if column in rows else []
    return float(values[0]) if len(values) else None


def _cell(row) -> str:
    spread = f" ± {row['std']:.2f}" if row["n"] > 1 else ""
    ours = "—" if row["n"] == 0 else f"{row['mean']:.2f}{spread} (n={row['n']}, {row['epochs']} ep)"
    return f"{ours} [{row['paper']:.2f}]"


def wide(long: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: methods down, (dataset, model) across; each cell 'ours (n) [paper]'."""
    table = long["table"].iloc[0]
    models = TABLES[table]["models"]
    frame = long.assign(cell=long.apply(_cell, axis=1),
                        column=[f"{DATASETS[d]} {models[m]}" for d, m in zip(long["dataset"], long["model"])])
    order = [f"{DATASETS[d]} {models[m]}" for d, m in _columns(table)]
    labels = [label for label, _, _ in TABLES[table]["rows"]]
    layout = frame.pivot(index="row", columns="column", values="cell").reindex(index=labels, columns=order)
    return layout.rename_axis(index=None, columns=None)


def to_markdown(frame: pd.DataFrame) -> str:
    # Hand-written: pandas' to_markdown needs the tabulate package, which nothing else here uses.
    header = ["", *frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([index, *row]) + " |" for index, row in zip(frame.index, frame.to_numpy().tolist())]
    return "\n".join(lines) + "\n"


def _choices_text(chosen: dict) -> str:
    """A line saying which configuration the cells show where a cell's runs had several, or ''."""
    made = [f"{cell} at {setting_text(picks)}" for cell, picks in chosen.items() if picks]
    return f"Each cell pools the seeds of one configuration; of several: {'; '.join(made)}.\n\n" if made else ""


def write_tables(runs: pd.DataFrame, out_dir, **selection) -> list[dict]:
    """Table II and/or III for the methods/models present; CSV (long), Markdown and LaTeX (wide)."""
    written = []
    for table, spec in TABLES.items():
        if not runs["model"].isin(list(spec["models"])).any():
            continue
        long = paper_table(runs, table, **selection)
        layout = wide(long)
        stem = out_dir / f"table_{table}"
        long.to_csv(f"{stem}.csv", index=False)
        (out_dir / f"table_{table}.md").write_text(
            f"Table {table}: test accuracy (%) mean ± std over seeds (n runs, epochs trained) [paper]\n\n"
            + _choices_text(long.attrs["chosen"]) + to_markdown(layout))
        layout.to_latex(f"{stem}.tex",
                        caption=f"Table {table}: test accuracy, ours mean $\\pm$ std (n, epochs) [paper]")
        written.append({"table": table, "csv": f"{stem}.csv", "md": f"{stem}.md", "tex": f"{stem}.tex",
                        "html": layout.to_html(border=0)})
    return written
