"""What an Optuna study is told of a sweep's trials: the searcher's own study, and a copy in a SQLite file that
optuna-dashboard can open. A trial a scheduler stopped early is PRUNED in both, never COMPLETE with the
values of a shorter training (Ray's OptunaSearch would say COMPLETE).

The searcher keeps its own in-memory study, which Tune checkpoints and restores with the sweep; a
study in SQLite would run ahead of that snapshot when a driver is killed, and a resumed searcher
then fails ("trial has already finished"). So finished trials are exported from the driver, once
each (found again by their `trial_id` attribute after a restart).
"""

import logging
import warnings

import optuna
from optuna.trial import TrialState, create_trial
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from runrecord import FULL_BUDGET_TAG, TRIAL_TAG, run_fields

logger = logging.getLogger(__name__)


def distributions(space) -> dict:
    """Optuna distributions of the searched fields; a grid's choices include the values that
    `include` configurations give the same field (e.g. method: ann beside a grid of ticket methods)."""
    return {name: parameter.to_optuna([extra[name] for extra in space.include if name in extra])
            for name, parameter in space.searched.items()}


def finished_state(result: dict | None, error: bool = False) -> TrialState:
    """How an ended trial is told to Optuna: FAIL, COMPLETE at full budget, else PRUNED (stopped early).

    PRUNED is what Optuna 5's samplers handle in multi-objective studies (read in their code): NSGA-II
    builds its populations from COMPLETE trials only, GP fits COMPLETE trials only, and TPE puts a PRUNED
    trial without intermediate values (Ray reports none in multi-objective studies) in its worse group
    whenever COMPLETE trials fill its good one (the best 10 % of the trials, at most 25; with fewer
    COMPLETE trials than that, the earliest PRUNED ones fill the rest). In single-objective studies TPE
    ranks PRUNED trials by their last reported value. A COMPLETE trial with a short training's values
    would instead sit in NSGA-II's populations and on the front."""
    if error:
        return TrialState.FAIL
    return TrialState.COMPLETE if result and result.get(FULL_BUDGET_TAG) else TrialState.PRUNED


class FullBudgetOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, except that a trial stopped before its full budget is told as PRUNED."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if error or trial_id in self._completed_trials or finished_state(result) == TrialState.COMPLETE:
            return super().on_trial_complete(trial_id, result, error)
        self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


class OptunaStudyExport(tune.Callback):
    def __init__(self, storage: str, study_name: str, space):
        self.storage, self.study_name = storage, study_name
        self.metrics = [o.metric for o in space.objectives]
        self.directions = ["maximize" if o.mode == "max" else "minimize" for o in space.objectives]
        self.distributions = distributions(space)
        self._study = None

    def __getstate__(self):  # Tune pickles callbacks; a storage connection is not picklable
        return {**self.__dict__, "_study": None}

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self._study = optuna.create_study(storage=self.storage, study_name=self.study_name,
                                              directions=self.directions, load_if_exists=True)
            with warnings.catch_warnings():  # set_metric_names is marked experimental since Optuna 3.2
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._study.set_metric_names(self.metrics)
        return self._study

    def _export(self, trial, state: TrialState) -> None:
        # A copy for optuna-dashboard: if it cannot take a trial, say so, but never fail the trial.
        try:
            self._add(trial, state)
        except Exception as err:  # noqa: BLE001
            logger.warning("optuna-dashboard export of trial %s skipped: %s", trial.trial_id, err)

    def _add(self, trial, state: TrialState) -> None:
        if any(t.user_attrs.get(TRIAL_TAG) == trial.trial_id for t in self.study.get_trials(deepcopy=False)):
            return
        result = trial.last_result or {}
        fields = run_fields(trial.config)
        params = {k: fields[k] for k in self.distributions if k in fields}
        values = [float(result[m]) for m in self.metrics] if state == TrialState.COMPLETE else None
        self.study.add_trial(create_trial(
            params=params, distributions={k: self.distributions[k] for k in params}, values=values, state=state,
            user_attrs={TRIAL_TAG: trial.trial_id, FULL_BUDGET_TAG: bool(result.get(FULL_BUDGET_TAG)),
                        "epochs": int(result.get("epoch", 0))}))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._export(trial, finished_state(trial.last_result))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._export(trial, TrialState.FAIL)
