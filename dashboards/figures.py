"""A sweep's runs -> figures: a matplotlib PNG and a self-contained plotly HTML per figure (DESIGN §7).

Plotly's PNG export needs kaleido (which downloads a browser), so PNGs come from matplotlib (Agg) and
the interactive figures are offline HTML with plotly.js inlined (no CDN). Each figure is computed once
as a `Spec` (title, axes, layers of aggregated data) and then rendered twice, by `_png` and `_html`.

Curves use finished, full-budget runs only (an ASHA-stopped trial's early values are not comparable);
where several runs share a configuration (seeds), a point is their mean with ±1 std.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from dashboards.pareto import hypervolume_curve, reference_text
from dashboards.runs import one_configuration, read_fields, reads, setting_text
from runrecord import (ACCURACY, EARLY_STOPPED_TAG, ENERGY_METRICS, ESTIMATES, RUN_FIELDS, TRIAL_TAG,
                       VAL_ACCURACY, comparable, finished_full_budget)
from slt.config import TRANSFORMERS
from slt.methods import METHODS

ACCURACY_AXIS = "test accuracy (fraction correct)"
VAL_AXIS = "validation accuracy (fraction correct)"
ENERGY = "energy per image (mJ)"
ENERGY_AXES = {"energy_mj_sparse": "energy per image, scaled by kept weights (mJ)",
               "energy_mj_effective": "energy per image, effective operations (mJ)"}
AXES = {  # swept run-config column -> axis label
    "p": "weight pruning ratio p (fraction of weights pruned)",
    "q": "patch pruning ratio q (fraction of tokens pruned)",
    "T": "time steps T",
    "decay": "membrane decay rate λ",
}
IDENTITY = ("model", "dataset")  # split series by these only where a sweep mixes them
MAX_SERIES_LEVELS = 6  # another swept column with at most this many values splits the lines; more: averaged over
HOVER_FIELDS = ("trial_id", "method", "p", "q", "T", "decay", "seed")
PALETTE = [to_hex(c) for c in colormaps["tab10"].colors]


# ---- the data a figure shows -------------------------------------------------------------------------

@dataclass
class Curve:  # mean ± std of accuracy per x of one series; std NaN where one run (n = 1)
    label: str
    color: str
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray
    hover: list[str]
    connect: bool = True  # False where other columns vary uncontrolled: points, not a curve
    val_mean: np.ndarray | None = None  # mean validation accuracy per x: what chooses an optimum
    markers: bool = True  # False for long curves (per epoch): a line with a ±1 std band
    panel: str | None = None  # the subplot it is drawn in, titled so; None: the figure has one plot


@dataclass
class Baseline:  # a method that does not depend on x (dense twins): a horizontal line, band ±1 std
    label: str
    color: str
    x: tuple[float, float]
    mean: float
    std: float
    n: int


@dataclass
class Points:  # individual runs; `values` colours them on a colour scale titled `values_title`
    label: str
    color: str
    x: np.ndarray
    y: np.ndarray
    hover: list[str]
    values: np.ndarray | None = None
    values_title: str = ""
    faint: bool = False
    marker: str = "o"


@dataclass
class Front:  # a Pareto front: step line through its points, sorted by x
    label: str
    color: str
    x: np.ndarray
    y: np.ndarray
    hover: list[str]


@dataclass
class Optimum:  # one marked point with an annotation
    label: str
    x: float
    y: float
    text: str


@dataclass
class Heatmap:  # mean accuracy per cell; rows = y values, columns = x values; n runs per cell
    x: list[float]
    y: list[float]
    mean: np.ndarray
    n: np.ndarray
    colorbar: str


@dataclass
class Bars:  # grouped bars, one group per category and one bar per series; mean ± std over n runs
    categories: list[str]
    series: list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]  # label, colour, mean, std, n per category
    log: bool = False


@dataclass
class Spec:
    name: str
    title: str
    xlabel: str
    ylabel: str
    layers: list = field(default_factory=list)


# ---- aggregation (public: the tests check it against pandas) ----------------------------------------

def series_columns(runs: pd.DataFrame, x: str) -> list[str]:
    """What splits the lines of a curve over `x`: the method, model/dataset where they vary, and other
    swept columns with few values (a grid); swept columns with more values are averaged over."""
    identity = [c for c in IDENTITY if c in runs and runs[c].nunique() > 1]
    grid = [c for c in AXES if c != x and c in runs and 1 < runs[c].nunique() <= MAX_SERIES_LEVELS]
    return [*identity, "method", *grid]


def curve_data(runs: pd.DataFrame, x: str, y: str = ACCURACY, by: list[str] | None = None) -> pd.DataFrame:
    """Mean, std (ddof 1; NaN for a single run) and n of `y` per series and `x`, over comparable runs.

    Columns: the series columns (default `series_columns`), `x`, mean, std, n; sorted by series then x.
    """
    rows = comparable(runs)
    by = series_columns(rows, x) if by is None else by
    grouped = rows.groupby([*by, x], dropna=False)[y]
    return grouped.agg(mean="mean", std="std", n="count").reset_index().sort_values([*by, x], ignore_index=True)


def heatmap_data(runs: pd.DataFrame, x: str = "p", y: str = "q",
                 value: str = ACCURACY) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean of `value` and run count per (y, x) cell over comparable runs: two pivots, rows y, columns x."""
    grouped = comparable(runs).groupby([y, x])[value]
    return grouped.mean().unstack(x), grouped.count().unstack(x)


# ---- building the specs ------------------------------------------------------------------------------

def _varies(rows: pd.DataFrame, column: str) -> bool:
    return column in rows and rows[column].nunique() >= 2


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)


def _setting(value) -> str:
    """A run-config value as a label shows it: None (a field left at its default of None) where it is empty."""
    return "None" if pd.isna(value) else _fmt(value)


def _label(keys: dict) -> str:
    method = keys.pop("method")
    return ", ".join([method, *(f"{k}={_fmt(v)}" for k, v in keys.items())])


def _colors(runs: pd.DataFrame) -> dict[str, str]:
    """A colour per method, the same in every figure (series split further take the next free ones)."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(runs["method"].dropna().unique()))}


def _color_of(label: str, colors: dict[str, str], i: int) -> str:
    return colors.get(label, PALETTE[i % len(PALETTE)])


def _run_hover(row: pd.Series, extra: tuple[str, ...] = ()) -> str:
    parts = [f"{c} = {_fmt(row[c])}" for c in (*HOVER_FIELDS, *extra) if c in row and pd.notna(row[c])]
    return "<br>".join(parts)


def _not_fixed(columns: list[str]) -> str:
    """Title suffix where other swept columns vary across runs with many values (not a controlled curve)."""
    names = [{"decay": "λ"}.get(c, c) for c in columns]
    return f" ({', '.join(names)} not held fixed)" if names else ""


def _is_baseline(rows: pd.DataFrame, x: str) -> pd.Series:
    """Rows of methods that do not read field x: drawn as baselines of a curve over x."""
    return ~reads(rows, x)


def _curve_layers(rows: pd.DataFrame, x: str, colors: dict[str, str]) -> tuple[list, list[str]]:
    """Curves of the methods that depend on x, horizontal baselines of those that do not; and the
    other swept columns that vary with too many values to split the lines (not held fixed)."""
    is_base = _is_baseline(rows, x)
    swept, base = rows[~is_base], rows[is_base]
    by = series_columns(swept, x)
    unfixed = [c for c in AXES if c != x and c not in by and _varies(swept, c)]
    data = curve_data(swept, x, by=by)
    if VAL_ACCURACY in swept:
        chosen = curve_data(swept, x, VAL_ACCURACY, by=by)[[*by, x, "mean"]].rename(columns={"mean": "val_mean"})
        data = data.merge(chosen, on=[*by, x], how="left")
    layers = []
    for i, (keys, group) in enumerate(data.groupby(by, sort=True)):
        label = _label(dict(zip(by, keys)))
        hover = [f"{label}<br>{x} = {_fmt(v)}<br>accuracy = {m:.4f}" + (f" ± {s:.4f}" if n > 1 else "")
                 + f"<br>n = {n}" for v, m, s, n in zip(group[x], group["mean"], group["std"], group["n"])]
        layers.append(Curve(label, _color_of(label, colors, i), group[x].to_numpy(float), group["mean"].to_numpy(float),
                            group["std"].to_numpy(float), group["n"].to_numpy(int), hover, connect=not unfixed,
                            val_mean=group["val_mean"].to_numpy(float) if "val_mean" in group else None))
    span = (float(swept[x].min()), float(swept[x].max()))
    ident = [c for c in IDENTITY if _varies(base, c)] + ["method"]
    for keys, group in (base.groupby(ident, sort=True) if len(base) else []):
        label = _label(dict(zip(ident, keys))) + " (no " + x + ")"
        values = group[ACCURACY]
        layers.append(Baseline(label, colors.get(keys[-1], "#555555"), span, float(values.mean()),
                               float(values.std()), len(values)))
    return layers, unfixed


CURVES = {  # x -> (title, which rows to use); methods that do not read x are drawn as baselines
    "p": ("Accuracy vs weight pruning ratio p", None),
    "q": ("Accuracy vs patch pruning ratio q (transformers)",
          lambda r: r[r["model"].isin(TRANSFORMERS)] if "model" in r else r),
    "T": ("Accuracy vs time steps T", None),
}


def _curve_spec(rows: pd.DataFrame, x: str, colors: dict[str, str]) -> Spec | None:
    title, select = CURVES[x]
    rows = select(rows) if select else rows
    if not _varies(rows[~_is_baseline(rows, x)], x):
        return None
    layers, unfixed = _curve_layers(rows, x, colors)
    return Spec(f"accuracy_vs_{x}", title + _not_fixed(unfixed), AXES[x], ACCURACY_AXIS, layers)


def _decay_spec(rows: pd.DataFrame, order: pd.Series, colors: dict[str, str]) -> Spec | None:
    rows = rows[~_is_baseline(rows, "decay")]  # an ANN has no membrane
    if not _varies(rows, "decay"):
        return None
    layers, unfixed = _curve_layers(rows, "decay", colors)
    curves = [layer for layer in layers if isinstance(layer, Curve)]
    layers.append(Points("sampled λ (colour: trial order)", "#444444", rows["decay"].to_numpy(float),
                         rows[ACCURACY].to_numpy(float), [_run_hover(r, (ACCURACY,)) for _, r in rows.iterrows()],
                         values=order.loc[rows.index].to_numpy(float), values_title="trial (order sampled)"))
    for curve in curves:  # the optimum is chosen on validation and shown at its test accuracy
        if curve.val_mean is None or np.isnan(curve.val_mean).all():
            continue  # runs recorded before the validation split: nothing may choose
        best = int(np.nanargmax(curve.val_mean))
        n = f" (mean of {curve.n[best]})" if curve.n[best] > 1 else ""
        layers.append(Optimum(f"optimum on validation, {curve.label}", float(curve.x[best]), float(curve.mean[best]),
                              f"optimum λ on validation = {curve.x[best]:.3g}<br>test accuracy = "
                              f"{curve.mean[best]:.4f}{n}"))
    title = "Accuracy vs membrane decay rate λ" + _not_fixed(unfixed)
    return Spec("accuracy_vs_decay", title, AXES["decay"], ACCURACY_AXIS, layers)


def _balance_specs(rows: pd.DataFrame) -> list[Spec]:
    methods = [m for m, g in rows.groupby("method", sort=True) if _varies(g, "p") and _varies(g, "q")]
    specs = []
    for method in methods:
        mean, n = heatmap_data(rows[rows["method"] == method])
        name = "balance_pq" if len(methods) == 1 else f"balance_pq_{method}"
        specs.append(Spec(name, f"Balance of p and q: mean accuracy of {method}", AXES["p"], AXES["q"],
                          [Heatmap(list(mean.columns), list(mean.index), mean.to_numpy(float),
                                   n.fillna(0).to_numpy(int), "mean " + ACCURACY_AXIS)]))
    return specs


def _pareto_spec(pareto: pd.DataFrame | None) -> Spec | None:
    """The front as ranked: x the first minimised objective (an energy), y the first maximised one."""
    if pareto is None or "is_pareto" not in pareto:
        return None
    objectives = pareto.attrs.get("objectives", [(VAL_ACCURACY, "max"), ("energy_mj", "min")])
    x_name = next((name for name, mode in objectives if mode == "min"), None)
    y_name = next((name for name, mode in objectives if mode == "max"), None)
    if x_name is None or y_name is None or x_name not in pareto or y_name not in pareto:
        return None
    done = pareto[(pareto["run_status"] == "FINISHED") & pareto[[y_name, x_name]].notna().all(axis=1)]
    if done.empty:
        return None
    full = finished_full_budget(done)
    front = done[full & done["is_pareto"].astype(bool)].sort_values(x_name)
    dominated = done[full & ~done["is_pareto"].astype(bool)]
    stopped = done[~full]

    def hover(frame):
        return [_run_hover(r, tuple(dict.fromkeys((y_name, ACCURACY, x_name, "energy_mj")))) for _, r in frame.iterrows()]

    def xy(frame):
        return frame[x_name].to_numpy(float), frame[y_name].to_numpy(float)

    layers = [Points(f"dominated (full budget, {len(dominated)})", PALETTE[0], *xy(dominated), hover(dominated)),
              Front(f"Pareto front ({len(front)})", PALETTE[3], *xy(front), hover(front))]
    if len(stopped):
        layers.insert(0, Points(f"early-stopped: partial budget, not comparable, never on the front ({len(stopped)})",
                                "#999999", *xy(stopped), hover(stopped), faint=True, marker="x"))
    ranked = f" (ranked on {done['ranked_on'].iloc[0]})" if "ranked_on" in done else ""
    xlabel = ENERGY if x_name == "energy_mj" else ENERGY_AXES.get(x_name, x_name)
    ylabel = VAL_AXIS if y_name == VAL_ACCURACY else y_name
    return Spec("pareto_accuracy_energy", f"{ylabel.split(' (')[0].capitalize()} vs {xlabel.split(' (')[0]}: the front "
                "the search ranks" + ranked + "; test accuracy in pareto.csv", xlabel, ylabel, layers)


def _hypervolume_spec(pareto: pd.DataFrame | None) -> Spec | None:
    """Hypervolume of the full-budget front against epochs spent, a point per trial as it ended; early-stopped
    trials marked (they spend epochs and add no volume)."""
    if pareto is None or "is_pareto" not in pareto:
        return None
    objectives = pareto.attrs.get("objectives", [(VAL_ACCURACY, "max"), ("energy_mj", "min")])
    curve = hypervolume_curve(pareto, objectives)
    if curve.attrs["reference"] is None:
        return None

    def hover(frame):
        return [f"trial {r[TRIAL_TAG]}<br>after {r['epochs_spent']:.0f} epochs: hypervolume {r['hypervolume']:.4g}"
                for _, r in frame.iterrows()]

    def xy(frame):
        return frame["epochs_spent"].to_numpy(float), frame["hypervolume"].to_numpy(float)

    ranked, stopped = curve[curve["ranked"]], curve[curve[EARLY_STOPPED_TAG].astype(bool)]
    layers = [Front(f"after a full-budget trial ({len(ranked)})", PALETTE[3], *xy(ranked), hover(ranked))]
    if len(stopped):
        layers.append(Points(f"after an early-stopped trial ({len(stopped)}): epochs spent, no volume", "#555555",
                             *xy(stopped), hover(stopped), marker="x"))
    reference = reference_text(curve)
    return Spec("hypervolume", "Hypervolume of the full-budget front vs epochs spent",
                f"epochs spent by all trials (reference point: {reference})", "hypervolume", layers)




def energy_model_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and n of every energy estimate per method over full-budget runs of one configuration per
    method (dashboards.runs.one_configuration: a ticket swept over p is shown at p = 0.5 where it ran it,
    as the paper's tables; a sweep over T at T = 4). Rows: labels ('mpslt p=0.5', 'mpslt p=0.5 T=4'), methods
    in slt.methods order; `attrs["method"]`, `attrs["p"]` and `attrs["setting"]` map each label to its method,
    p (NaN: dense) and the other fields chosen ('T=4 (of 1, 2, 4, 6, 8)')."""
    present = [m for m in ENERGY_METRICS if m in runs and runs[m].notna().any()]
    rows = comparable(runs, tuple(present))
    if rows.empty or not present:  # (runs that recorded no energy estimate)
        return pd.DataFrame()
    rows, chosen = one_configuration(rows)
    if "p" in rows:  # every run records p (a default for dense methods): only tickets are told apart by it
        rows = read_fields(rows, ["p"])
    others = {m: {k: v for k, v in picks.items() if k != "p"} for m, picks in chosen.items()}
    def label(row: pd.Series) -> str:
        ratio = [f"p={_fmt(row['p'])}"] if pd.notna(row.get("p")) else []
        return " ".join([row["method"], *ratio, *(f"{k}={_fmt(v)}" for k, (v, _) in others[row["method"]].items())])

    rows = rows.assign(label=rows.apply(label, axis=1))
    table = rows.groupby("label")[present].agg(["mean", "std", "count"])
    order = {m: i for i, m in enumerate(METHODS)}
    table = table.loc[sorted(table.index, key=lambda lab: (order.get(lab.split(" ")[0], 99), lab))]
    first = rows.drop_duplicates("label").set_index("label")
    table.attrs.update(method=first["method"].to_dict(),
                       p=first["p"].to_dict() if "p" in first else dict.fromkeys(first.index, np.nan),
                       setting={lab: setting_text(others[m]) for lab, m in first["method"].items()})
    return table


def _energy_models_spec(runs: pd.DataFrame) -> Spec | None:
    """Energy per image of each method under every estimate the runs recorded (log scale: they differ by
    orders of magnitude); only where more than the paper's convention was recorded."""
    table = energy_model_data(runs)
    estimates = list(dict.fromkeys(name for name, _ in table.columns)) if not table.empty else []
    if len(estimates) < 2:
        return None
    series = [(ESTIMATES.get(name, name), PALETTE[i % len(PALETTE)], table[name]["mean"].to_numpy(float),
               table[name]["std"].to_numpy(float), table[name]["count"].to_numpy(int))
              for i, name in enumerate(estimates)]
    return Spec("energy_models", "Energy per image under each estimate (mean ± std over full-budget runs)",
                "method", ENERGY + ", log scale", [Bars(list(table.index), series, log=True)])


LAYER_ESTIMATES = {"energy_pj": "paper convention", "energy_pj_effective": "effective operations",
                   "memory_aware_pj": "memory-aware"}


def _energy_layers_spec(layers: tuple[pd.Series, list[dict]] | None) -> Spec | None:
    """Energy per layer of one trial (the best on validation) under each estimate its table holds."""
    if layers is None or not layers[1]:
        return None
    best, rows = layers
    present = [key for key in LAYER_ESTIMATES if all(key in row for row in rows)]
    names = [row["layer"] for row in rows]
    series = [(LAYER_ESTIMATES[key], PALETTE[i], np.array([row[key] * 1e-9 for row in rows], float),
               np.full(len(rows), np.nan), np.ones(len(rows), int)) for i, key in enumerate(present)]
    who = f"{best.get('method', '')} trial {best.get('trial_id', '')}"
    return Spec("energy_layers", f"Energy per layer of the trial best on validation ({who})", "layer",
                ENERGY + ", log scale", [Bars(names, series, log=True)])


def learning_columns(runs: pd.DataFrame) -> list[str]:
    """What a learning curve (and a row of the plateau table) is: a configuration, i.e. the method and
    every other run-config field that differs between the full-budget runs with validation accuracy
    (p, T, λ, a method's lr, an image size set for some runs and not for others, ...) among the runs of
    the methods that read it; the seeds of a configuration are averaged."""
    done = comparable(runs, (VAL_ACCURACY,))
    varied = [c for c in RUN_FIELDS if c in done and c not in ("method", "seed")
              and done.loc[reads(done, c), c].nunique(dropna=False) > 1]
    return ["method", *varied]


def _learning_spec(runs: pd.DataFrame, history: pd.DataFrame | None, colors: dict[str, str]) -> Spec | None:
    """Validation accuracy after every epoch, mean ± std over seeds per configuration: the plateau check.
    One panel per method, titled with the settings its runs share; its curves are the configurations."""
    if history is None or history.empty:
        return None
    by = learning_columns(runs)
    rows = read_fields(comparable(runs, (VAL_ACCURACY,)), by)
    data = (history.merge(rows[["run_id", *by]], on="run_id").groupby([*by, "epoch"], dropna=False)[VAL_ACCURACY]
            .agg(mean="mean", std="std", n="count").reset_index())
    layers = []
    for method, block in data.groupby("method", sort=True):
        read = [c for c in by[1:] if reads(block.head(1), c).iloc[0]]
        inside = [c for c in read if block[c].nunique(dropna=False) > 1]  # what tells this method's curves apart
        panel = _label({"method": method, **{c: _setting(block[c].iloc[0]) for c in read if c not in inside}})
        for i, (keys, group) in enumerate(block.groupby(inside, sort=True, dropna=False) if inside else [((), block)]):
            label = ", ".join(f"{k}={_setting(v)}" for k, v in zip(inside, keys)) or method
            hover = [f"{panel}<br>{label}<br>epoch {e}<br>validation accuracy = {m:.4f}"
                     + (f" ± {s:.4f}" if n > 1 else "") + f"<br>n = {n}"
                     for e, m, s, n in zip(group["epoch"], group["mean"], group["std"], group["n"])]
            layers.append(Curve(label, PALETTE[i % len(PALETTE)] if inside else colors[method],
                                group["epoch"].to_numpy(float), group["mean"].to_numpy(float),
                                group["std"].to_numpy(float), group["n"].to_numpy(int), hover, markers=False,
                                panel=panel))
    return Spec("learning_curves", "Learning curves: validation accuracy per epoch (mean ± std over seeds)",
                "epoch", VAL_AXIS, layers)


def figure_specs(runs: pd.DataFrame, pareto: pd.DataFrame | None,
                 layers: tuple[pd.Series, list[dict]] | None = None,
                 history: pd.DataFrame | None = None) -> list[Spec]:
    """The figures the data supports, each as aggregated data ready to render. Trial order (the colour
    of sampled λ) is the order of trial ids, over every run including failed ones. `history`
    (dashboards.runs.epoch_history) adds the learning curves."""
    rows = comparable(runs)
    colors = _colors(runs)
    order = pd.Series(range(len(runs)), index=runs.sort_values("trial_id", kind="stable").index
                      if "trial_id" in runs else runs.index)
    specs = [_curve_spec(rows, x, colors) for x in CURVES] + [_decay_spec(rows, order, colors)]
    specs += _balance_specs(rows) + [_pareto_spec(pareto), _hypervolume_spec(pareto), _energy_models_spec(runs),
                                     _energy_layers_spec(layers), _learning_spec(runs, history, colors)]
    return [spec for spec in specs if spec is not None]


# ---- rendering: matplotlib PNG -----------------------------------------------------------------------

def _png_bars(ax, layer: Bars) -> None:
    width = 0.8 / len(layer.series)
    positions = np.arange(len(layer.categories))
    for i, (label, color, mean, std, n) in enumerate(layer.series):
        ax.bar(positions + (i - (len(layer.series) - 1) / 2) * width, mean, width, color=color,
               yerr=np.where(n > 1, std, np.nan), capsize=2, label=label)
    ax.set_xticks(positions, layer.categories, rotation=20, ha="right")
    if layer.log:
        ax.set_yscale("log")


def _panels(spec: Spec) -> dict[str | None, list]:
    """The spec's layers by the panel they are drawn in, in order of appearance (one None panel if none is named)."""
    panels: dict[str | None, list] = {}
    for layer in spec.layers:
        panels.setdefault(getattr(layer, "panel", None), []).append(layer)
    return panels


def _legend(ax) -> None:
    handles = ax.get_legend_handles_labels()[0]
    if handles:
        ax.legend(fontsize=8 if len(handles) <= 8 else 6, ncol=1 if len(handles) <= 8 else 2)


def _png(spec: Spec, path: Path) -> None:
    panels = _panels(spec)
    if list(panels) == [None]:
        fig = Figure(figsize=(7.5, 5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        _draw(fig, ax, spec.layers)
        ax.set(title=spec.title, xlabel=spec.xlabel, ylabel=spec.ylabel)
        _legend(ax)
    else:  # small multiples with shared axes, a legend in each
        cols = min(3, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig = Figure(figsize=(4.2 * cols, 3.4 * rows + 0.4), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
        for ax, (panel, layers) in zip(axes, panels.items()):
            _draw(fig, ax, layers)
            ax.set_title(panel, fontsize=9)
            _legend(ax)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        fig.suptitle(spec.title)
        fig.supxlabel(spec.xlabel)
        fig.supylabel(spec.ylabel)
    fig.savefig(path, dpi=120)


def _draw(fig: Figure, ax, layers: list) -> None:
    for layer in layers:
        match layer:
            case Curve() if not layer.markers:
                ax.plot(layer.x, layer.mean, color=layer.color, linewidth=1.2, label=layer.label)
                spread = np.where(layer.n > 1, layer.std, np.nan)
                ax.fill_between(layer.x, layer.mean - spread, layer.mean + spread, color=layer.color, alpha=0.15)
            case Curve():
                ax.errorbar(layer.x, layer.mean, yerr=np.where(layer.n > 1, layer.std, np.nan), color=layer.color,
                            marker="o", capsize=3, linestyle="-" if layer.connect else "none", label=layer.label)
            case Baseline():
                ax.hlines(layer.mean, *layer.x, colors=layer.color, linestyles="--",
                          label=f"{layer.label}, n={layer.n}")
                if layer.n > 1:
                    ax.fill_between(layer.x, layer.mean - layer.std, layer.mean + layer.std, color=layer.color,
                                    alpha=0.15)
            case Points():
                if layer.values is not None:
                    drawn = ax.scatter(layer.x, layer.y, c=layer.values, cmap="viridis", edgecolors="black",
                                       linewidths=0.5, zorder=3, label=layer.label)
                    fig.colorbar(drawn, ax=ax, label=layer.values_title)
                else:
                    ax.scatter(layer.x, layer.y, color=layer.color, marker=layer.marker,
                               alpha=0.35 if layer.faint else 0.8, label=layer.label)
            case Front():
                ax.step(layer.x, layer.y, where="post", color=layer.color, label=layer.label)
                ax.scatter(layer.x, layer.y, color=layer.color, zorder=3)
            case Optimum():
                ax.scatter([layer.x], [layer.y], marker="*", s=300, color="red", edgecolors="black", zorder=4,
                           label=layer.label)
                ax.annotate(layer.text.replace("<br>", "\n"), (layer.x, layer.y), xytext=(15, -30),
                            textcoords="offset points", arrowprops={"arrowstyle": "->"},
                            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8})
            case Heatmap():
                image = ax.imshow(layer.mean, origin="lower", cmap="viridis", aspect="auto")
                fig.colorbar(image, ax=ax, label=layer.colorbar)
                ax.set_xticks(range(len(layer.x)), [_fmt(v) for v in layer.x])
                ax.set_yticks(range(len(layer.y)), [_fmt(v) for v in layer.y])
                for (i, j), value in np.ndenumerate(layer.mean):
                    if not math.isnan(value):
                        ax.text(j, i, f"{value:.3f}\nn={layer.n[i, j]}", ha="center", va="center", fontsize=8,
                                color="white" if value < np.nanmean(layer.mean) else "black")
            case Bars():
                _png_bars(ax, layer)


# ---- rendering: plotly HTML (plotly.js inlined, works offline) ---------------------------------------

def _nan_to_none(values) -> list:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in map(float, values)]


def _html_bars(fig: go.Figure, layer: Bars) -> None:
    for label, color, mean, std, n in layer.series:
        fig.add_trace(go.Bar(x=layer.categories, y=_nan_to_none(mean), name=label, marker_color=color,
                             error_y={"type": "data", "array": _nan_to_none(np.where(n > 1, std, np.nan))},
                             customdata=n, hovertemplate="%{x}: %{y:.4g} mJ (n = %{customdata})<extra></extra>"))
    fig.update_layout(barmode="group")
    if layer.log:
        fig.update_yaxes(type="log")


def _html_curve(fig: go.Figure, layer: Curve, where: dict | None = None) -> None:
    """One curve; `where` = {"row": r, "col": c} places it in a subplot (its legend entry then names the panel)."""
    where = where or {}
    name = f"{layer.panel}: {layer.label}" if layer.panel else layer.label
    if not layer.markers and (layer.n > 1).any():  # the ±1 std band of a long curve, as in the PNG
        low, high = layer.mean - layer.std, layer.mean + layer.std
        fig.add_trace(go.Scatter(x=np.concatenate([layer.x, layer.x[::-1]]),
                                 y=_nan_to_none(np.concatenate([low, high[::-1]])), fill="toself",
                                 fillcolor=layer.color, opacity=0.15, line={"width": 0},
                                 legendgroup=name, showlegend=False, hoverinfo="skip"), **where)
    fig.add_trace(go.Scatter(
        x=layer.x, y=layer.mean, name=name, legendgroup=name,
        mode=("lines+markers" if layer.markers else "lines") if layer.connect else "markers",
        line={"color": layer.color}, marker={"color": layer.color},
        error_y={"type": "data", "array": _nan_to_none(np.where(layer.n > 1, layer.std, np.nan)),
                 "visible": layer.markers}, text=layer.hover, hovertemplate="%{text}<extra></extra>"), **where)


def _html_panels(spec: Spec, panels: dict[str, list], path: Path) -> None:
    """Small multiples (panels of curves) as plotly subplots with shared axes."""
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes=True, shared_yaxes=True, subplot_titles=list(panels),
                        vertical_spacing=0.08, horizontal_spacing=0.04)
    for index, layers in enumerate(panels.values()):
        for layer in layers:
            _html_curve(fig, layer, {"row": index // cols + 1, "col": index % cols + 1})
    fig.update_layout(title={"text": spec.title}, template="plotly_white", height=320 * rows + 120,
                      legend={"orientation": "h", "y": -0.12})
    fig.update_xaxes(title_text=spec.xlabel, row=rows)
    fig.update_yaxes(title_text=spec.ylabel, col=1)
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def _html(spec: Spec, path: Path) -> None:
    if list(panels := _panels(spec)) != [None]:
        return _html_panels(spec, panels, path)
    fig = go.Figure()
    for layer in spec.layers:
        match layer:
            case Curve():
                _html_curve(fig, layer)
            case Baseline():
                x0, x1 = layer.x
                label = f"{layer.label}, n={layer.n}"
                if layer.n > 1:
                    low, high = layer.mean - layer.std, layer.mean + layer.std
                    fig.add_trace(go.Scatter(x=[x0, x1, x1, x0], y=[low, low, high, high], fill="toself",
                                             fillcolor=layer.color, opacity=0.15, line={"width": 0},
                                             legendgroup=label, showlegend=False, hoverinfo="skip"))
                hover = f"{layer.label}<br>accuracy = {layer.mean:.4f}" + (
                    f" ± {layer.std:.4f}" if layer.n > 1 else "") + f"<br>n = {layer.n}"
                fig.add_trace(go.Scatter(x=[x0, x1], y=[layer.mean, layer.mean], name=label, mode="lines",
                                         line={"color": layer.color, "dash": "dash"}, legendgroup=label,
                                         text=[hover, hover], hovertemplate="%{text}<extra></extra>"))
            case Points():
                marker = {"color": layer.color, "symbol": "x" if layer.marker == "x" else "circle", "size": 9}
                if layer.values is not None:
                    marker.update(color=layer.values, colorscale="Viridis", showscale=True,
                                  colorbar={"title": {"text": layer.values_title}, "x": 1.02, "len": 0.6},
                                  line={"color": "black", "width": 0.5})
                fig.add_trace(go.Scatter(x=layer.x, y=layer.y, name=layer.label, mode="markers", marker=marker,
                                         opacity=0.35 if layer.faint else 0.9, text=layer.hover,
                                         hovertemplate="%{text}<extra></extra>"))
            case Front():
                fig.add_trace(go.Scatter(x=layer.x, y=layer.y, name=layer.label, mode="lines+markers",
                                         line={"color": layer.color, "shape": "hv"}, marker={"size": 10},
                                         text=layer.hover, hovertemplate="%{text}<extra></extra>"))
            case Optimum():
                fig.add_trace(go.Scatter(x=[layer.x], y=[layer.y], name=layer.label, mode="markers",
                                         marker={"symbol": "star", "size": 20, "color": "red",
                                                 "line": {"color": "black", "width": 1}},
                                         text=[layer.text], hovertemplate="%{text}<extra></extra>"))
                fig.add_annotation(x=layer.x, y=layer.y, text=layer.text, showarrow=True, ax=60, ay=40,
                                   bgcolor="rgba(255,255,255,0.8)")
            case Heatmap():
                text = [[f"{v:.3f}<br>n={c}" if not math.isnan(v) else "" for v, c in zip(row, counts)]
                        for row, counts in zip(layer.mean, layer.n)]
                fig.add_trace(go.Heatmap(
                    z=[_nan_to_none(row) for row in layer.mean], x=[_fmt(v) for v in layer.x],
                    y=[_fmt(v) for v in layer.y], text=text, texttemplate="%{text}", colorscale="Viridis",
                    colorbar={"title": {"text": layer.colorbar}},
                    hovertemplate="p = %{x}<br>q = %{y}<br>mean accuracy = %{z:.4f}<extra></extra>"))
                fig.update_xaxes(type="category")
                fig.update_yaxes(type="category")
            case Bars():
                _html_bars(fig, layer)
    fig.update_layout(title={"text": spec.title}, xaxis_title=spec.xlabel, yaxis_title=spec.ylabel,
                      template="plotly_white", legend={"orientation": "h", "y": -0.2})
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def write_figures(runs: pd.DataFrame, pareto: pd.DataFrame | None, out_dir: Path,
                  layers: tuple[pd.Series, list[dict]] | None = None,
                  history: pd.DataFrame | None = None) -> list[dict]:
    """Write every figure the data supports as NAME.png (matplotlib) and NAME.html (plotly, offline) into
    `out_dir` (created; existing files of the same names are replaced).

    `runs`: dashboards.runs.load_runs's table; `pareto`: dashboards.pareto.pareto_table's, or None.
    Returns one {"name", "title", "png", "html"} per figure, in a fixed order: accuracy vs p, q, T, λ,
    the (p, q) balance heatmap(s), the accuracy/energy Pareto scatter, the energy estimates per method, and
    with `layers` (dashboards.runs.energy_layers) the per-layer energy of the trial best on validation,
    and with `history` (dashboards.runs.epoch_history) the learning curves.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in figure_specs(runs, pareto, layers, history):
        png, html = out_dir / f"{spec.name}.png", out_dir / f"{spec.name}.html"
        _png(spec, png)
        _html(spec, html)
        written.append({"name": spec.name, "title": spec.title, "png": png, "html": html})
    return written
