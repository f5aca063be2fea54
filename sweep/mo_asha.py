"""Multi-objective asynchronous successive halving (MO-ASHA; Schmucker et al., arXiv 2106.12639) for Ray Tune.

Ray Tune's schedulers rank trials by one metric. This one ranks them by all of a sweep's objectives:
when a trial reaches a rung (epoch grace_period x η^k below the full budget), it is recorded there and
goes on if it is among the best 1/η of the trials recorded at that rung so far, itself included
(position < n / η of n; so the first trial at a rung always goes on). Asynchronous like ASHA: nobody
waits for a rung to fill, and a decision once made stands.

"Best" is a total order of the rung (`rung_order`): non-dominated sorting first (moocore's Pareto
ranks: a dominated trial never outranks one of an earlier front, however lonely it is), then inside a
front the ε-net order of the paper: objectives min-max normalised over the rung, the first trial taken
is the front's best on the first objective if nothing is taken yet, then each next one is the trial
farthest (Euclidean) from every trial already taken, earlier fronts included; trials with equal
values keep their arrival order. ε-net rather than NSGA-II's crowding distance because rungs are
small: crowding distance is infinite for every trial of a front of one or two, so it cannot order
them, while the ε-net orders any front and was the best tie-break in the paper's benchmarks.

The rungs live in a JSON file in the sweep's folder, written at every decision: Tune restores a
scheduler as it was pickled when the sweep began, so a resumed sweep reads its rungs back from there,
and a trial that reports a rung again after a resume gets the decision it got the first time (never
recorded, promoted or stopped twice).
"""

import json
from pathlib import Path

import moocore
import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from sweep.tracking import write_json

TIME_ATTR = "epoch"  # epochs over every phase, as the full budget (sweep.engine.max_budget) counts them


def rung_order(points, maximise) -> list[int]:
    """Indices of a rung's trials (rows of `points`, one column per objective, in arrival order), best first."""
    values = np.asarray(points, dtype=float)
    if len(values) == 0:
        return []
    ranks = moocore.pareto_rank(values, maximise=list(maximise))
    # min-max normalised, every objective turned into "lower is better"; a constant objective counts for nothing
    signed = np.where(np.asarray(maximise), -values, values)
    spread = np.ptp(signed, axis=0)
    scaled = (signed - signed.min(axis=0)) / np.where(spread > 0, spread, 1.0)
    order: list[int] = []
    for rank in np.unique(ranks):
        front = [int(i) for i in np.flatnonzero(ranks == rank)]  # arrival order: ties go to the earlier trial
        if not order:
            first = min(front, key=lambda i: (scaled[i, 0], i))
            order.append(first)
            front.remove(first)
        while front:
            nearest = [np.linalg.norm(scaled[order] - scaled[i], axis=1).min() for i in front]
            best = max(range(len(front)), key=lambda k: (nearest[k], -front[k]))
            order.append(front.pop(best))
    return order


def continues(points, maximise, reduction_factor: float) -> bool:
    """Whether the rung's newest trial (the last row of `points`) goes on: its place in `rung_order` is
    within the best 1/η of the trials recorded there."""
    position = rung_order(points, maximise).index(len(points) - 1)
    return position < len(points) / reduction_factor


def milestones(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The rungs' epochs: grace_period x η^k, every one below the full budget (distinct, ascending)."""
    rungs, k = [], 0
    while (epoch := int(grace_period * reduction_factor ** k)) < max_t:
        if epoch not in rungs:
            rungs.append(epoch)
        k += 1
    return rungs


class MultiObjectiveASHA(FIFOScheduler):
    """Stops a trial at a rung unless it is in the best 1/η there over `objectives` [(metric, "max"|"min")]."""

    def __init__(self, objectives, max_t: int, grace_period: int = 1, reduction_factor: float = 2.0,
                 state_file: str | None = None):
        super().__init__()
        self.objectives = [tuple(o) for o in objectives]
        self.max_t, self.grace_period, self.reduction_factor = max_t, grace_period, reduction_factor
        self.rungs = milestones(max_t, grace_period, reduction_factor)
        self.state_file = state_file
        self._recorded = None  # {rung epoch: {trial_id: {"values": [...], "continued": bool}}}, read on first use

    def __getstate__(self):  # Tune pickles the scheduler once, when the sweep begins: the rungs live in state_file
        return {**self.__dict__, "_recorded": None}

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # it reads its own objectives; Tune's single metric, if any, is not one of them

    @property
    def recorded(self) -> dict[int, dict]:
        if self._recorded is None:
            path = Path(self.state_file) if self.state_file else None
            saved = json.loads(path.read_text())["rungs"] if path is not None and path.is_file() else {}
            self._recorded = {rung: saved.get(str(rung), {}) for rung in self.rungs}
        return self._recorded

    def decide(self, trial_id: str, epoch: int, values: list[float]) -> str:
        """CONTINUE or STOP for a trial reporting `values` of the objectives after `epoch` epochs."""
        stopped_before = any(not entry[trial_id]["continued"] for entry in self.recorded.values() if trial_id in entry)
        if stopped_before:  # stopped at a rung before a resume restored it: the decision stands
            return TrialScheduler.STOP
        rung = max((r for r in self.rungs if r <= epoch), default=None)
        if rung is None or trial_id in self.recorded[rung]:
            return TrialScheduler.CONTINUE  # below the first rung, or already promoted here
        entries = self.recorded[rung]
        points = [entry["values"] for entry in entries.values()] + [values]
        going_on = continues(points, [mode == "max" for _, mode in self.objectives], self.reduction_factor)
        entries[trial_id] = {"values": values, "continued": going_on}
        self._save()
        return TrialScheduler.CONTINUE if going_on else TrialScheduler.STOP

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if TIME_ATTR not in result or any(metric not in result for metric, _ in self.objectives):
            return TrialScheduler.CONTINUE
        return self.decide(trial.trial_id, int(result[TIME_ATTR]), [float(result[m]) for m, _ in self.objectives])

    def _save(self) -> None:
        if self.state_file:  # replaced whole: a driver killed mid-write leaves the previous state
            write_json(Path(self.state_file), {"objectives": self.objectives,
                                               "rungs": {str(r): e for r, e in self.recorded.items()}})

    def debug_string(self) -> str:
        rungs = ", ".join(f"epoch {rung}: {sum(e['continued'] for e in entries.values())}/{len(entries)} went on"
                          for rung, entries in self.recorded.items())
        return f"MO-ASHA (η={self.reduction_factor:g}) {rungs or 'no rungs below the full budget'}"
