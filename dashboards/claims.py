"""The paper's claims (DESIGN §1) checked on a sweep's runs, with their spread over seeds.

Each check applies where the sweep has the runs it needs and gives rows of one long table:
claim, setting, the measured quantity (mean, std, n), the paper's statement, and a verdict.
- Reward 1 / Reward 2: accuracy lost by a spiking ticket against its dense SNN vs the ANN ticket
  against its dense ANN, paired by seed, at each p (CNN tickets) or q (transformer tickets).
- T trend: mean accuracy per T and Spearman's rank correlation of accuracy with T over all runs.
- λ: accuracy against λ rises then falls (best λ inside the range, both ends below it).
- Energy: energy per image of the spiking ticket, dense SNN and ANN, and their ratios.
Verdicts: "holds" when the effect has the paper's sign and its mean exceeds two standard errors,
"does not hold" when it has the opposite sign beyond two standard errors, otherwise "within noise".
"""

import math

import pandas as pd
from scipy.stats import spearmanr

from dashboards.runs import at
from runrecord import ACCURACY, comparable
from slt.methods import METHODS

# (claim, spiking ticket, spiking dense, ANN ticket, ANN dense, the ratio the tickets are indexed by)
DROP_PAIRS = [
    ("Reward 1", "mpslt", "snn", "mplt", "ann", "p"),
    ("Reward 1 (single-prize tickets)", "slt", "snn", "lt", "ann", "p"),
    ("Reward 2", "multisp-slt", "snn", "multisp-lt", "ann", "q"),
    ("Reward 2 (ConvPEP only, no patch pruning)", "pepsp-slt", "snn", "pepsp-lt", "ann", None),
]
PAPER_ENERGY = {"mpslt/snn": 0.079 / 0.093}  # VGG-9 CIFAR-10, paper: MPSLT 0.079 mJ vs dense SNN 0.093 mJ


def verdict(mean: float, std: float, n: int) -> str:
    """The effect (positive = the paper's direction) against two standard errors of its mean."""
    if n == 0 or math.isnan(mean):
        return "no runs"
    margin = 2 * std / math.sqrt(n) if n > 1 and not math.isnan(std) else math.inf
    if mean > margin:
        return "holds"
    if mean < -margin:
        return "does not hold"
    return "within noise" if n > 1 else "one run: no spread"


def _stats(values: pd.Series) -> dict:
    values = values.dropna()
    return {"mean": values.mean() if len(values) else math.nan,
            "std": values.std(ddof=1) if len(values) > 1 else math.nan, "n": len(values)}


def _by_seed(rows: pd.DataFrame) -> pd.Series:
    return rows.groupby("seed")[ACCURACY].mean()


def drop_rows(done: pd.DataFrame) -> list[dict]:
    """Reward 1/2: per seed, (ANN dense - ANN ticket) - (SNN dense - spiking ticket); > 0 is the paper's claim."""
    rows = []
    for claim, s_ticket, s_dense, a_ticket, a_dense, ratio in DROP_PAIRS:
        dense_s, dense_a = _by_seed(done[done["method"] == s_dense]), _by_seed(done[done["method"] == a_dense])
        tickets_s, tickets_a = done[done["method"] == s_ticket], done[done["method"] == a_ticket]
        if tickets_s.empty or tickets_a.empty or dense_s.empty or dense_a.empty:
            continue
        levels = sorted(set(tickets_s[ratio]) & set(tickets_a[ratio])) if ratio else [None]
        for level in levels:
            spiking_drop = dense_s - _by_seed(at(tickets_s, ratio, level) if ratio else tickets_s)
            ann_drop = dense_a - _by_seed(at(tickets_a, ratio, level) if ratio else tickets_a)
            advantage = (ann_drop - spiking_drop).dropna()  # seeds present in all four
            s, a, d = _stats(100 * spiking_drop), _stats(100 * ann_drop), _stats(100 * advantage)
            setting = f"{s_ticket} vs {a_ticket}" + (f", {ratio}={level:g}" if ratio else "")
            rows.append({"claim": claim, "setting": setting,
                         "measured": f"accuracy drop (points) from the dense twin: spiking {s['mean']:.2f} ± "
                                     f"{s['std']:.2f}, ANN {a['mean']:.2f} ± {a['std']:.2f}",
                         "quantity": "ANN drop - spiking drop (points)", **d,
                         "paper": "spiking tickets lose less accuracy than ANN tickets",
                         "verdict": verdict(d["mean"], d["std"], d["n"])})
    return rows


def timestep_rows(done: pd.DataFrame) -> list[dict]:
    if "T" not in done or done["T"].nunique() < 2 or not done["method"].map(lambda m: METHODS[m].spiking).all():
        return []
    per_t = done.groupby("T")[ACCURACY].agg(["mean", "std", "count"])
    means = " · ".join(f"T={t}: {100 * r['mean']:.1f} ± {100 * r['std']:.1f}" for t, r in per_t.iterrows())
    rho, pvalue = spearmanr(done["T"], done[ACCURACY])
    increasing = bool((per_t["mean"].diff().dropna() > 0).all())
    holds = "holds" if rho > 0 and pvalue < 0.05 else ("does not hold" if rho < 0 and pvalue < 0.05 else "within noise")
    return [{"claim": "accuracy grows with T", "setting": f"{', '.join(sorted(done['method'].unique()))}",
             "measured": f"accuracy % per T: {means}; means increase at every step: {increasing}",
             "quantity": f"Spearman rho of accuracy with T (p = {pvalue:.2g})", "mean": rho, "std": math.nan,
             "n": len(done), "paper": "accuracy grows with T", "verdict": holds}]


def decay_rows(done: pd.DataFrame) -> list[dict]:
    if "decay" not in done or done["decay"].nunique() < 5:
        return []
    per_decay = done.groupby("decay")[ACCURACY].mean()  # sorted by λ
    best = per_decay.idxmax()
    low_end, high_end = per_decay.iloc[:2].mean(), per_decay.iloc[-2:].mean()
    rise, fall = per_decay.max() - low_end, per_decay.max() - high_end
    interior = per_decay.index[0] < best < per_decay.index[-1]
    return [{"claim": "accuracy vs λ rises then falls", "setting": f"{len(done)} runs, λ in "
             f"[{per_decay.index[0]:.3f}, {per_decay.index[-1]:.3f}]",
             "measured": f"best λ = {best:.3f} ({100 * per_decay.max():.1f}%); the two lowest λ average "
                         f"{100 * low_end:.1f}%, the two highest {100 * high_end:.1f}%",
             "quantity": "smaller of rise and fall (points)", "mean": 100 * min(rise, fall), "std": math.nan,
             "n": len(done), "paper": "non-monotonic: an interior optimum",
             "verdict": "holds" if interior and min(rise, fall) > 0 else "does not hold"}]


def energy_rows(done: pd.DataFrame) -> list[dict]:
    if "energy_mj" not in done:
        return []
    per_method = {m: _stats(done[done["method"] == m]["energy_mj"]) for m in ("ann", "snn", "mpslt")}
    if any(per_method[m]["n"] == 0 for m in per_method):
        return []
    tickets = done[done["method"] == "mpslt"]
    snn, ann = per_method["snn"], per_method["ann"]
    rows = []
    for p in sorted(tickets["p"].unique()):
        ticket = at(tickets, "p", p)
        mj, sparse = _stats(ticket["energy_mj"]), _stats(ticket["energy_mj_sparse"])
        rows.append({"claim": "energy per image", "setting": f"mpslt p={p:g}",
                     "measured": f"mJ per image: ANN {ann['mean']:.4f}, dense SNN {snn['mean']:.4f} ± "
                                 f"{snn['std']:.4f}, MPSLT {mj['mean']:.4f} ± {mj['std']:.4f} "
                                 f"(sparsity-aware {sparse['mean']:.4f}); MPSLT/ANN = {mj['mean'] / ann['mean']:.3f}, "
                                 f"SNN/ANN = {snn['mean'] / ann['mean']:.3f}",
                     "quantity": "MPSLT / dense SNN energy (paper convention)", "mean": mj["mean"] / snn["mean"],
                     "std": math.nan, "n": mj["n"],
                     "paper": f"MPSLT / dense SNN = {PAPER_ENERGY['mpslt/snn']:.2f} (0.079 vs 0.093 mJ); "
                              "a spiking ticket costs ~11% of the ANN",
                     "verdict": "holds" if mj["mean"] < snn["mean"] else "does not hold"})
    return rows


def claim_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every check the runs allow, one row per (claim, setting); only finished, full-budget runs count."""
    done = comparable(runs)
    rows = drop_rows(done) + timestep_rows(done) + decay_rows(done) + energy_rows(done)
    return pd.DataFrame(rows, columns=["claim", "setting", "measured", "quantity", "mean", "std", "n", "paper",
                                       "verdict"])


def to_markdown(table: pd.DataFrame) -> str:
    from dashboards.tables import to_markdown as markdown

    shown = table.assign(value=[f"{m:.3g}" + ("" if math.isnan(s) else f" ± {s:.2g}") + f" (n={n})"
                                for m, s, n in zip(table["mean"], table["std"], table["n"])])
    frame = shown.set_index("claim")[["setting", "quantity", "value", "verdict", "measured"]]
    return markdown(frame.astype(str).rename_axis(None))
