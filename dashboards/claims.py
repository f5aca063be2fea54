"""The paper's claims (DESIGN §1) checked on a sweep's runs, with their spread over seeds.

Each check applies where the sweep has the runs it needs and gives rows of one long table:
claim, setting, the measured quantity (mean, std, n), the budget (epochs) of the runs compared, the
paper's statement, and a verdict.
- Reward 1 / Reward 2: accuracy lost by a spiking ticket against its dense SNN vs the ANN ticket
  against its dense ANN, paired by seed, at each p (CNN tickets) or q (transformer tickets).
- Reward 2 as sparsity grows: accuracy a transformer ticket loses from the lowest q a sweep ran to the
  highest, the ANN ticket's minus the spiking ticket's, paired by seed.
- T trend: mean accuracy per T and Spearman's rank correlation of accuracy with T over all runs.
- λ: accuracy against λ rises then falls: the best λ (chosen on validation accuracy) lies inside the
  range and its test accuracy exceeds both ends' by more than two standard errors.
- A search against a grid (`slt report --against`, two sweeps): the value an adaptive search (the λ GP)
  picks on validation, and the test accuracy of the grid cell nearest it against the grid's best cell
  (chosen on validation too), paired by seed.
- Fine-tuning (Fig. 5 right): a ticket's accuracy with its kept weights fine-tuned after the search
  minus without, at the same total epochs, paired by seed, per method and p.
- Energy: energy per image of the spiking ticket, dense SNN and ANN, and their ratios (paired by seed),
  by the paper's convention and under every other estimate the runs recorded.
Accuracies are test accuracies; the only choices made (the best λ, a search's pick, a grid's best cell)
read validation accuracy.
Verdicts: "holds" when the effect has the paper's sign and its mean exceeds two standard errors,
"does not hold" when it has the opposite sign beyond two standard errors, otherwise "within noise".
A verdict needs at least two seeds in every compared cell ("insufficient seeds (n = 1)" otherwise) and
runs of equal budgets ("unequal budgets" otherwise).
"""

import math

import pandas as pd
from scipy.stats import spearmanr

from dashboards.runs import at, budget, reads
from runrecord import ACCURACY, ENERGY_METRICS, ESTIMATES, RUN_FIELDS, SYMBOLS, VAL_ACCURACY, comparable
from slt.errors import InputError
from slt.methods import METHODS

MIN_SEEDS = 2  # a verdict needs at least this many seeds in every compared cell

# (claim, spiking ticket, spiking dense, ANN ticket, ANN dense, the ratio the tickets are indexed by)
DROP_PAIRS = [
    ("Reward 1", "mpslt", "snn", "mplt", "ann", "p"),
    ("Reward 1 (single-prize tickets)", "slt", "snn", "lt", "ann", "p"),
    ("Reward 2", "multisp-slt", "snn", "multisp-lt", "ann", "q"),
    ("Reward 2 (ConvPEP only, no patch pruning)", "pepsp-slt", "snn", "pepsp-lt", "ann", None),
]
# (claim, spiking ticket, ANN ticket, the ratio that grows): DESIGN's Reward 2 says spiking tickets "degrade less
# than ANN tickets as sparsity grows", a statement about the slope, which the per-q drops above do not judge
GROWTH_PAIRS = [("Reward 2 (as q grows)", "multisp-slt", "multisp-lt", "q")]
# run-config fields two sweeps may differ in and still be compared cell by cell (seeds, where they ran)
NOT_COMPARED = ("seed", "device", "neuron_backend", "data_dir")
PAPER_ENERGY = {"mpslt/snn": 0.079 / 0.093}  # VGG-9 CIFAR-10, paper: MPSLT 0.079 mJ vs dense SNN 0.093 mJ


def verdict(mean: float, std: float, n: int) -> str:
    """The effect (positive = the paper's direction) against two standard errors of its mean."""
    if n == 0 or math.isnan(mean):
        return "no runs"
    if n < MIN_SEEDS:
        return f"insufficient seeds (n = {n})"
    margin = 2 * std / math.sqrt(n) if not math.isnan(std) else math.inf
    if mean > margin:
        return "holds"
    if mean < -margin:
        return "does not hold"
    return "within noise"


def _stats(values: pd.Series) -> dict:
    values = values.dropna()
    return {"mean": values.mean() if len(values) else math.nan,
            "std": values.std(ddof=1) if len(values) > 1 else math.nan, "n": len(values)}


def _pm(stats: dict, digits: int = 4) -> str:
    """'0.0083 ± 0.0002', or '0.0083 (n = 1)' where one run gives no spread."""
    spread = f" ± {stats['std']:.{digits}f}" if stats["n"] > 1 else f" (n = {stats['n']})"
    return f"{stats['mean']:.{digits}f}{spread}"


def _by_seed(rows: pd.DataFrame, column: str = ACCURACY) -> pd.Series:
    return rows.groupby("seed")[column].mean()


def _refusal(seeds: int, epochs: str) -> str | None:
    """Why no verdict can be given (too few seeds in a compared cell, unequal budgets), or None."""
    if "/" in epochs:
        return f"unequal budgets ({epochs} epochs)"
    return f"insufficient seeds (n = {seeds})" if seeds < MIN_SEEDS else None


def _judged(mean: float, std: float, n: int, epochs: str) -> str:
    """verdict(), unless the compared runs trained for different numbers of epochs."""
    return _refusal(n, epochs) or verdict(mean, std, n)


def _advantage_row(claim: str, setting: str, spiking_loss: pd.Series, ann_loss: pd.Series, epochs: str, *,
                   lost: str, quantity: str, paper: str) -> dict:
    """One Reward row from per-seed accuracy losses: the ANN ticket's minus the spiking one's (> 0: the paper's)."""
    advantage = (ann_loss - spiking_loss).dropna()  # seeds present in every compared cell
    s, a, d = _stats(100 * spiking_loss), _stats(100 * ann_loss), _stats(100 * advantage)
    return {"claim": claim, "setting": setting, "measured": f"{lost}: spiking {_pm(s, 2)}, ANN {_pm(a, 2)}",
            "quantity": quantity, **d, "epochs": epochs, "paper": paper,
            "verdict": _judged(d["mean"], d["std"], d["n"], epochs)}


def drop_rows(done: pd.DataFrame) -> list[dict]:
    """Reward 1/2: per seed, (ANN dense - ANN ticket) - (SNN dense - spiking ticket); > 0 is the paper's claim."""
    rows = []
    for claim, s_ticket, s_dense, a_ticket, a_dense, ratio in DROP_PAIRS:
        dense_s, dense_a = done[done["method"] == s_dense], done[done["method"] == a_dense]
        tickets_s, tickets_a = done[done["method"] == s_ticket], done[done["method"] == a_ticket]
        if tickets_s.empty or tickets_a.empty or dense_s.empty or dense_a.empty:
            continue
        levels = sorted(set(tickets_s[ratio]) & set(tickets_a[ratio])) if ratio else [None]
        for level in levels:
            cell_s = at(tickets_s, ratio, level) if ratio else tickets_s
            cell_a = at(tickets_a, ratio, level) if ratio else tickets_a
            spiking_drop = _by_seed(dense_s) - _by_seed(cell_s)
            ann_drop = _by_seed(dense_a) - _by_seed(cell_a)
            setting = f"{s_ticket} vs {a_ticket}" + (f", {ratio}={level:g}" if ratio else "")
            epochs = budget(dense_s, dense_a, cell_s, cell_a)
            rows.append(_advantage_row(claim, setting, spiking_drop, ann_drop, epochs,
                                       lost="test accuracy drop (points) from the dense twin",
                                       quantity="ANN drop - spiking drop (points)",
                                       paper="spiking tickets lose less accuracy than ANN tickets"))
    return rows


def growth_rows(done: pd.DataFrame) -> list[dict]:
    """Reward 2 as q grows: per seed, the ANN ticket's accuracy lost from the lowest q both tickets ran to the
    highest, minus the spiking ticket's; > 0 is the paper's claim."""
    rows = []
    for claim, s_ticket, a_ticket, ratio in GROWTH_PAIRS:
        tickets_s, tickets_a = done[done["method"] == s_ticket], done[done["method"] == a_ticket]
        levels = sorted(set(tickets_s[ratio]) & set(tickets_a[ratio]))
        if len(levels) < 2:
            continue
        low, high = levels[0], levels[-1]
        s_low, s_high, a_low, a_high = (at(tickets, ratio, level) for tickets in (tickets_s, tickets_a)
                                        for level in (low, high))
        rows.append(_advantage_row(claim, f"{s_ticket} vs {a_ticket}, {ratio}={low:g} → {high:g}",
                                   _by_seed(s_low) - _by_seed(s_high), _by_seed(a_low) - _by_seed(a_high),
                                   budget(s_low, s_high, a_low, a_high),
                                   lost=f"test accuracy lost (points) from {ratio}={low:g} to {high:g}",
                                   quantity=f"ANN loss - spiking loss (points) as {ratio} grows",
                                   paper="spiking tickets degrade less than ANN tickets as sparsity grows"))
    return rows


def timestep_rows(done: pd.DataFrame) -> list[dict]:
    if "T" not in done or done["T"].nunique() < 2 or not done["method"].map(lambda m: METHODS[m].spiking).all():
        return []
    per_t = done.groupby("T")[ACCURACY].agg(["mean", "std", "count"])
    means = " · ".join(f"T={t}: {100 * r['mean']:.1f}" + (f" ± {100 * r['std']:.1f}" if r["count"] > 1 else "")
                       + f" (n={int(r['count'])})"
                       for t, r in per_t.iterrows())
    rho, pvalue = spearmanr(done["T"], done[ACCURACY])
    increasing = bool((per_t["mean"].diff().dropna() > 0).all())
    seeds, epochs = int(per_t["count"].min()), budget(done)
    judged = _refusal(seeds, epochs) or ("holds" if rho > 0 and pvalue < 0.05 else
                                         "does not hold" if rho < 0 and pvalue < 0.05 else "within noise")
    return [{"claim": "accuracy grows with T", "setting": f"{', '.join(sorted(done['method'].unique()))}",
             "measured": f"test accuracy % per T: {means}; means increase at every step: {increasing}",
             "quantity": f"Spearman rho of accuracy with T over {len(done)} runs (p = {pvalue:.2g}); n = fewest "
                         "seeds of a T", "mean": rho, "std": math.nan, "n": seeds, "epochs": epochs,
             "paper": "accuracy grows with T", "verdict": judged}]


def decay_rows(done: pd.DataFrame) -> list[dict]:
    """The λ curve: the best λ by mean validation accuracy; its test accuracy against both ends' (two
    lowest and two highest λ), each difference beyond two standard errors for "holds"."""
    if "decay" not in done or done["decay"].nunique() < 5 or VAL_ACCURACY not in done:
        return []  # (runs recorded before the validation split cannot choose a λ)
    test = done.groupby("decay")[ACCURACY].agg(["mean", "std", "count"])  # sorted by λ
    seeds, epochs = int(test["count"].min()), budget(done)
    best = done.groupby("decay")[VAL_ACCURACY].mean().idxmax()
    ends = {"low": test.iloc[:2], "high": test.iloc[-2:]}
    gaps = {name: test.loc[best, "mean"] - end["mean"].mean() for name, end in ends.items()}
    error = {name: math.sqrt(test.loc[best, "std"] ** 2 / test.loc[best, "count"]
                             + (end["std"] ** 2 / end["count"]).sum() / len(end) ** 2) for name, end in ends.items()}
    interior = test.index[0] < best < test.index[-1]
    below = any(gaps[k] < -2 * error[k] for k in gaps)  # an end beats the chosen λ beyond noise
    judged = _refusal(seeds, epochs) or ("does not hold" if not interior or below else
                                         "holds" if all(gaps[k] > 2 * error[k] for k in gaps) else "within noise")
    return [{"claim": "accuracy vs λ rises then falls", "setting": f"{len(done)} runs, {len(test)} λ in "
             f"[{test.index[0]:.3f}, {test.index[-1]:.3f}]",
             "measured": f"best λ on validation = {best:.3f}, test accuracy {100 * test.loc[best, 'mean']:.1f}%; "
                         f"{100 * gaps['low']:.1f} points above the two lowest λ, {100 * gaps['high']:.1f} above "
                         "the two highest",
             "quantity": "smaller of rise and fall (test points); n = fewest seeds of a λ",
             "mean": 100 * min(gaps.values()), "std": math.nan, "n": seeds, "epochs": epochs,
             "paper": "non-monotonic: an interior optimum", "verdict": judged}]


def searched_field(search: pd.DataFrame, grid: pd.DataFrame) -> str:
    """The one run-config field that a search sweep and a grid sweep both vary; a one-line error naming
    --against where there is not exactly one, or where the sweeps differ in any other field (their cells
    would not be the same runs)."""
    def varied(runs):
        return {f for f in RUN_FIELDS if f not in NOT_COMPARED and f in runs and runs[f].nunique() > 1}

    common = varied(search) & varied(grid)
    if len(common) != 1:
        raise InputError("against", f"a search is judged against a grid of the one field it varies; the search "
                                    f"varies {sorted(varied(search)) or 'nothing'}, the grid {sorted(varied(grid)) or 'nothing'}")
    (field,) = common
    for other in (f for f in RUN_FIELDS if f not in (*NOT_COMPARED, field) and f in search and f in grid):
        mine, theirs = (set(runs[other].dropna().astype(str)) for runs in (search, grid))
        if mine != theirs:
            raise InputError("against", f"the search and the grid differ in {other} ({', '.join(sorted(mine))} vs "
                                        f"{', '.join(sorted(theirs))}); both must run the same configuration")
    return field


def search_rows(search: pd.DataFrame, grid: pd.DataFrame) -> list[dict]:
    """The value a search picks on validation (the best mean over its runs at each value), the grid cell
    nearest it (ties: the one better on validation) and that cell's test accuracy minus the grid's best
    cell's (chosen on validation), paired by seed. "holds" where the nearest cell is the grid's best,
    "does not hold" where it is worse beyond two standard errors, else "within noise"."""
    field = searched_field(search, grid)
    search, grid = (comparable(runs, (ACCURACY, VAL_ACCURACY)) for runs in (search, grid))
    if search.empty or grid.empty:
        return []
    picked = search.groupby(field)[VAL_ACCURACY].mean().idxmax()
    cells = grid.groupby(field)[VAL_ACCURACY].mean()
    best = cells.idxmax()
    nearest = min(cells.index, key=lambda v: (abs(v - picked), -cells[v]))
    near, top, mine = at(grid, field, nearest), at(grid, field, best), at(search, field, picked)
    gap = _stats(100 * (_by_seed(near) - _by_seed(top)).dropna())
    epochs = budget(search, grid)
    seeds = min(near["seed"].nunique(), top["seed"].nunique())
    worse = verdict(gap["mean"], gap["std"], gap["n"]) == "does not hold"  # below the best beyond two SE
    judged = _refusal(seeds, epochs) or ("holds" if nearest == best else "does not hold" if worse else "within noise")
    name = SYMBOLS.get(field, field)
    def pct(rows):  # '59.0 ± 1.0 % (n = 3)'
        stats = _stats(100 * _by_seed(rows))
        return f"{stats['mean']:.1f}" + (f" ± {stats['std']:.1f}" if stats["n"] > 1 else "") + f" % (n = {stats['n']})"
    return [{"claim": f"the search finds the best {name}", "setting": f"{len(search)} search runs against a grid "
             f"of {len(grid)} ({cells.size} values)",
             "measured": f"picked on validation by the search: {name} = {picked:.3g} (validation "
                         f"{100 * mine[VAL_ACCURACY].mean():.1f} %, test {pct(mine)}); the grid's best on "
                         f"validation: {name} = {best:g} (test {pct(top)}); the grid cell nearest the pick: "
                         f"{name} = {nearest:g} (test {pct(near)})",
             "quantity": "test points, per seed: the grid cell nearest the pick - the grid's best cell",
             **gap, "epochs": epochs,
             "paper": f"an adaptive search finds the {name} a grid finds best, in fewer trials (DESIGN §7: "
                      "10-14 GP trials against ~46 grid points)",
             "verdict": judged}]


def finetune_rows(done: pd.DataFrame) -> list[dict]:
    """Fine-tuning after the ticket: per ticket method and p, test accuracy with `finetune_epochs` > 0 minus
    with 0 (the same total epochs: the search gets the rest), paired by seed; > 0 is the paper's direction."""
    if "finetune_epochs" not in done:
        return []
    tickets = done[reads(done, "finetune_epochs") & done["finetune_epochs"].notna()]
    rows = []
    for (method, p), runs in tickets.groupby(["method", "p"]):
        without = runs[runs["finetune_epochs"] == 0]
        if without.empty:  # nothing to compare the fine-tuned runs with
            continue
        for tuned_epochs in sorted(set(runs["finetune_epochs"]) - {0}):
            tuned = runs[runs["finetune_epochs"] == tuned_epochs]
            gain = _stats(100 * (_by_seed(tuned) - _by_seed(without)).dropna())
            epochs = budget(tuned, without)
            rows.append({"claim": "fine-tuning after the ticket", "setting": f"{method} p={p:g}, "
                         f"{int(tuned_epochs)} epochs fine-tuned vs 0",
                         "measured": f"test accuracy %: fine-tuned {_pm(_stats(100 * _by_seed(tuned)), 2)}, "
                                     f"not {_pm(_stats(100 * _by_seed(without)), 2)}",
                         "quantity": "fine-tuned - not (test points), per seed", **gain, "epochs": epochs,
                         "paper": "fine-tuning the kept weights after the ticket is found raises its accuracy "
                                  "(Fig. 5 right)",
                         "verdict": _judged(gain["mean"], gain["std"], gain["n"], epochs)})
    return rows


def energy_rows(done: pd.DataFrame) -> list[dict]:
    """Energy per image of MPSLT against the dense SNN, paired by seed (< 1 is the paper's direction)."""
    if "energy_mj" not in done:
        return []
    cells = {m: done[done["method"] == m] for m in ("ann", "snn", "mpslt")}
    if any(cell.empty for cell in cells.values()):
        return []
    ann, snn = _stats(cells["ann"]["energy_mj"]), _stats(cells["snn"]["energy_mj"])
    rows = []
    for p in sorted(cells["mpslt"]["p"].unique()):
        ticket = at(cells["mpslt"], "p", p)
        mj = _stats(ticket["energy_mj"])
        sparse = (f" (sparsity-aware {ticket['energy_mj_sparse'].mean():.4f})"
                  if "energy_mj_sparse" in ticket and ticket["energy_mj_sparse"].notna().any() else "")
        ratio = _stats((_by_seed(ticket, "energy_mj") / _by_seed(cells["snn"], "energy_mj")).dropna())
        epochs = budget(ticket, cells["snn"])
        rows.append({"claim": "energy per image", "setting": f"mpslt p={p:g}",
                     "measured": f"mJ per image: ANN {ann['mean']:.4f}, dense SNN {_pm(snn)}, MPSLT {_pm(mj)}"
                                 f"{sparse}; MPSLT/ANN = {mj['mean'] / ann['mean']:.3f}, "
                                 f"SNN/ANN = {snn['mean'] / ann['mean']:.3f}",
                     "quantity": "MPSLT / dense SNN energy (paper convention), per seed", **ratio, "epochs": epochs,
                     "paper": f"MPSLT / dense SNN = {PAPER_ENERGY['mpslt/snn']:.2f} (0.079 vs 0.093 mJ); "
                              "a spiking ticket costs ~11% of the ANN",
                     "verdict": _judged(1 - ratio["mean"], ratio["std"], ratio["n"], epochs)})
    return rows + other_estimate_rows(done, cells)


def other_estimate_rows(done: pd.DataFrame, cells: dict[str, pd.DataFrame]) -> list[dict]:
    """MPSLT / ANN energy by the paper's convention, and MPSLT / dense SNN and MPSLT / ANN under each other
    estimate the runs recorded (runrecord.ENERGY_METRICS), paired by seed; < 1 is the paper's direction."""
    rows = []
    for metric in [m for m in ENERGY_METRICS if m in done and done[m].notna().any()]:
        label = ESTIMATES.get(metric, metric)
        for p in sorted(cells["mpslt"]["p"].unique()):
            ticket = at(cells["mpslt"], "p", p)
            for dense in ("snn", "ann")[metric == ENERGY_METRICS[0]:]:  # (the paper's MPSLT/SNN row is energy_rows')
                ratio = _stats((_by_seed(ticket, metric) / _by_seed(cells[dense], metric)).dropna())
                if ratio["n"] == 0:  # that estimate is missing on one side: nothing to compare
                    continue
                epochs = budget(ticket, cells[dense])
                name = "dense SNN" if dense == "snn" else "ANN"
                rows.append({"claim": f"energy per image ({label})", "setting": f"mpslt p={p:g} vs {name}",
                             "measured": f"mJ per image: MPSLT {ticket[metric].mean():.4g}, {name} "
                                         f"{cells[dense][metric].mean():.4g}",
                             "quantity": f"MPSLT / {name} energy ({label}), per seed", **ratio, "epochs": epochs,
                             "paper": "a spiking ticket costs ~11% of the ANN" if metric == ENERGY_METRICS[0] else
                                      "beyond the paper (which uses its convention): a ticket cheaper than its "
                                      "dense twins",
                             "verdict": _judged(1 - ratio["mean"], ratio["std"], ratio["n"], epochs)})
    return rows


def claim_table(runs: pd.DataFrame, grid: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every check the runs allow, one row per (claim, setting); only finished, full-budget runs count.
    `grid`: another sweep's runs, a grid over the field these runs search (search_rows)."""
    done = comparable(runs)
    rows = (drop_rows(done) + growth_rows(done) + timestep_rows(done) + decay_rows(done) + finetune_rows(done)
            + energy_rows(done))
    if grid is not None:
        rows += search_rows(runs, grid)
    return pd.DataFrame(rows, columns=["claim", "setting", "measured", "quantity", "mean", "std", "n", "epochs",
                                       "paper", "verdict"])


def to_markdown(table: pd.DataFrame) -> str:
    from dashboards.tables import to_markdown as markdown

    shown = table.assign(value=[f"{m:.3g}" + ("" if math.isnan(s) else f" ± {s:.2g}") + f" (n={n})"
                                for m, s, n in zip(table["mean"], table["std"], table["n"])])
    frame = shown.set_index("claim")[["setting", "quantity", "value", "epochs", "verdict", "measured"]]
    return markdown(frame.astype(str).rename_axis(None))
