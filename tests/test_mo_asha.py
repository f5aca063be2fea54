"""sweep.mo_asha: the multi-objective promotion rule on hand-made rung tables, its rungs, its saved state;
and what Optuna is told of a stopped trial (sweep.study)."""

import pickle

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from sweep.engine import make_sampler, make_scheduler, max_budget, resolved_base
from sweep.mo_asha import MultiObjectiveASHA, continues, milestones, rung_order
from sweep.space import load_space
from slt.errors import InputError
from sweep.study import FullBudgetOptunaSearch, finished_state

ACC_ENERGY = [True, False]  # validation accuracy (max), energy per image (min)


def test_fronts_first_then_the_eps_net_inside_a_front():
    # A, B, D are mutually non-dominated; C is dominated by B (less accurate, more energy)
    a, b, c, d = (0.90, 3.0), (0.80, 1.0), (0.70, 2.0), (0.95, 5.0)
    # D is the front's most accurate; B lies farthest from D in the normalised plane (1.17 against A's 0.54)
    assert rung_order([a, b, c, d], ACC_ENERGY) == [3, 1, 0, 2]


def test_a_dominated_but_diverse_trial_never_outranks_the_front():
    # P and Q sit close together on the front; E is far from both (most diverse) but dominated by P
    p, q, e = (0.90, 1.00), (0.91, 1.01), (0.20, 1.02)
    assert rung_order([p, q, e], ACC_ENERGY) == [1, 0, 2]
    assert not continues([p, q, e], ACC_ENERGY, reduction_factor=2)  # n=3, η=2: places 0 and 1 go on
    assert continues([p, e, q], ACC_ENERGY, reduction_factor=2)  # Q arriving last is on the front: place 0


def test_ties_keep_arrival_order():
    same = [(0.8, 1.0)] * 3
    assert rung_order(same, ACC_ENERGY) == [0, 1, 2]
    assert not continues(same[:2], ACC_ENERGY, reduction_factor=2)  # an equal newcomer ranks behind
    # F and R are the front's ends; L1 and L2 lie equally far (√0.3125, normalised) from the nearer end:
    # whichever arrived first comes first
    f, r, l1, l2 = (1.0, 2.0), (0.0, 1.0), (0.75, 1.5), (0.5, 1.25)
    assert rung_order([f, r, l1, l2], ACC_ENERGY) == [0, 1, 2, 3]
    assert rung_order([f, r, l2, l1], ACC_ENERGY) == [0, 1, 2, 3]
    assert rung_order([l1, l2, r, f], ACC_ENERGY) == [3, 2, 0, 1]
    # one objective constant over the rung: it counts for nothing, the other orders the trials
    assert rung_order([(0.5, 1.0), (0.7, 1.0), (0.6, 1.0)], ACC_ENERGY) == [1, 2, 0]


def test_the_first_trial_at_a_rung_goes_on_and_only_the_best_third_does_at_eta_3():
    assert continues([(0.1, 9.0)], ACC_ENERGY, reduction_factor=3)
    rung = [(0.5, 2.0), (0.6, 3.0), (0.4, 4.0)]  # the newcomer (0.4, 4.0) is dominated by both
    assert rung_order(rung, ACC_ENERGY) == [1, 0, 2]
    assert not continues(rung, ACC_ENERGY, reduction_factor=3)
    assert continues([rung[0], rung[2], rung[1]], ACC_ENERGY, reduction_factor=3)  # (0.6, 3) is best on accuracy
    # with one objective it is ASHA's rule: the best 1/η by that objective
    assert rung_order([(0.3,), (0.9,), (0.5,), (0.7,)], [True]) == [1, 3, 2, 0]
    assert [continues([(0.3,), (0.9,), (0.5,), (x,)], [True], 2) for x in (0.95, 0.6, 0.4)] == [True, True, False]


def test_rungs_lie_below_the_full_budget():
    assert milestones(16, 2, 2) == [2, 4, 8]
    assert milestones(27, 1, 3) == [1, 3, 9]
    assert milestones(4, 1, 2.5) == [1, 2]
    assert milestones(2, 2, 2) == []


def _scheduler(tmp_path, **kw):
    return MultiObjectiveASHA([("val_accuracy", "max"), ("energy_mj", "min")], max_t=8, grace_period=2,
                              reduction_factor=2, state_file=str(tmp_path / "mo_asha.json"), **kw)


def test_decisions_are_made_once_saved_and_read_back_after_a_restart(tmp_path):
    scheduler = _scheduler(tmp_path)
    go, stop = TrialScheduler.CONTINUE, TrialScheduler.STOP
    assert scheduler.decide("a", 1, [0.1, 1.0]) == go  # below the first rung: nothing recorded
    assert scheduler.recorded == {2: {}, 4: {}}
    assert scheduler.decide("a", 2, [0.5, 2.0]) == go  # first at rung 2
    assert scheduler.decide("b", 2, [0.4, 3.0]) == stop  # dominated by a, n=2: only place 0 goes on
    assert scheduler.decide("c", 2, [0.6, 1.0]) == go  # dominates a: place 0 of 3
    # a resumed sweep's scheduler is the one pickled when the sweep began; it reads the rungs back
    restored = pickle.loads(pickle.dumps(_scheduler(tmp_path)))
    assert restored.recorded[2] == scheduler.recorded[2] and set(restored.recorded[2]) == {"a", "b", "c"}
    # a trial reporting the rung again after a resume gets its old decision and is not recorded twice
    assert restored.decide("a", 2, [0.0, 99.0]) == go and restored.recorded[2]["a"]["values"] == [0.5, 2.0]
    assert restored.decide("b", 2, [0.9, 0.1]) == stop
    assert restored.decide("b", 3, [0.9, 0.1]) == stop  # stopped at rung 2: stays stopped past it
    assert restored.decide("a", 4, [0.7, 2.0]) == go and restored.decide("c", 4, [0.65, 2.5]) == stop
    assert restored.decide("a", 8, [0.8, 2.0]) == go  # the full budget is not a rung
    saved = _scheduler(tmp_path).recorded
    assert {rung: {t: e["continued"] for t, e in entries.items()} for rung, entries in saved.items()} == {
        2: {"a": True, "b": False, "c": True}, 4: {"a": True, "c": False}}


def test_results_without_every_objective_are_not_judged(tmp_path):
    scheduler = _scheduler(tmp_path)
    trial = type("Trial", (), {"trial_id": "a"})()
    assert scheduler.on_trial_result(None, trial, {"epoch": 2, "val_accuracy": 0.5}) == TrialScheduler.CONTINUE
    assert scheduler.recorded[2] == {}
    assert scheduler.on_trial_result(None, trial, {"epoch": 2, "val_accuracy": 0.5, "energy_mj": 1.0}) == "CONTINUE"
    assert scheduler.recorded[2]["a"] == {"values": [0.5, 1.0], "continued": True}


@pytest.mark.parametrize("profile, budget, rungs", [("demo", 16, [4, 8]), ("cpu", 4, [1, 2]),
                                                    ("full", 100, [10, 20, 40, 80])])
def test_the_pareto_space_builds_mo_asha_on_its_objectives_and_budget(tmp_path, profile, budget, rungs):
    space, _ = load_space("pareto", profile, ["scheduler.type=mo_asha"])
    scheduler = make_scheduler(space, max_budget(space, resolved_base(space)), tmp_path / "mo_asha.json")
    assert isinstance(scheduler, MultiObjectiveASHA)
    assert scheduler.objectives == [("val_accuracy", "max"), ("energy_mj", "min")]
    assert (scheduler.max_t, scheduler.rungs) == (budget, rungs)
    assert space.energy_each_epoch  # every rung needs the energy of that epoch


def test_a_grace_period_without_a_rung_below_the_budget_is_refused_before_anything_runs():
    from sweep.engine import check_scheduler

    space, _ = load_space("pareto", "demo", ["scheduler.type=mo_asha", "scheduler.grace_period=16"])
    with pytest.raises(InputError, match=r"^scheduler.grace_period: 16 leaves no rung below the trials' 16 epochs; "
                                         r"allowed: 1 to 15$"):
        check_scheduler(space, resolved_base(space))
    plain, _ = load_space("pareto", "demo", ["scheduler.grace_period=16"])  # no scheduler: nothing to refuse
    check_scheduler(plain, resolved_base(plain))


def _searcher(space):
    from ray import tune

    searcher = FullBudgetOptunaSearch(metric=["val_accuracy", "energy_mj"], mode=["max", "min"],
                                      sampler=make_sampler(space))
    searcher.set_search_properties(None, None, {"p": tune.uniform(0.1, 0.9), "T": tune.choice([1, 2, 4, 6])})
    return searcher


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "gp"])
def test_stopped_trials_are_pruned_and_every_sampler_goes_on_after_them(sampler):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, _ = load_space("pareto", "demo", [f"search.sampler={sampler}", "search.population_size=2"])
    searcher = _searcher(space)
    for index in range(12):
        trial_id = f"t{index}"
        config = searcher.suggest(trial_id)
        full = index % 3 == 0  # a third of them ran their full budget
        accuracy = config["p"] * (1 if full else 0.5)
        searcher.on_trial_complete(trial_id, {"val_accuracy": accuracy, "energy_mj": config["T"] * 1.0,
                                              "full_budget": full, "epoch": 16 if full else 2})
    trials = searcher._ot_study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE if i % 3 == 0 else TrialState.PRUNED for i in range(12)]
    assert all(t.values is None for t in trials if t.state == TrialState.PRUNED)
    assert all(searcher.suggest(f"next{i}") for i in range(3))  # the sampler proposes after pruned trials
    searcher.on_trial_complete("next0", None, error=True)
    assert searcher._ot_study.get_trials(deepcopy=False)[12].state == TrialState.FAIL


def test_finished_state_reads_the_full_budget_flag():
    assert finished_state({"full_budget": True}) == TrialState.COMPLETE
    assert finished_state({"full_budget": False, "val_accuracy": 0.9}) == TrialState.PRUNED
    assert finished_state(None) == TrialState.PRUNED
    assert finished_state({"full_budget": True}, error=True) == TrialState.FAIL
