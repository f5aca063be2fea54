"""The MLflow sweep callback with fake trials (no Ray cluster): one child run per trial, every epoch
logged once, backfill after a driver restart; and the tags that close lost trials."""

import json
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

import runrecord
from sweep.tracking import LOST_REASON, MlflowSweepCallback, close_running_children

TAGS = {"sweep": "toy-demo-1", "profile": "demo"}


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("toy", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment, run_name="toy-demo-1").info.run_id
    return SimpleNamespace(uri=uri, client=client, experiment=experiment, parent=parent)


def driver(store) -> MlflowSweepCallback:
    """A fresh callback, as a (re)started driver has."""
    return MlflowSweepCallback(store.uri, store.experiment, store.parent, TAGS)


def trial(trial_id="t1", checkpoint=None, last_result=None):
    return SimpleNamespace(trial_id=trial_id, config={"method": "slt", "variant": {"p": 0.7, "seed": 1}},
                           checkpoint=checkpoint, last_result=last_result or {}, error_file=None)


def epoch(n: int, total: int = 3) -> dict:
    return {"epoch": n, "test_accuracy": 0.1 * n, "test_loss": 2.0 - n / 10, "train_accuracy": 0.2,
            "train_loss": 1.5, "energy_mj": 0.01, "phase": "search", "timestamp": 1000 + n,
            "full_budget": n == total}


def children(store):
    return store.client.search_runs([store.experiment],
                                    filter_string=f"tags.`{runrecord.PARENT_TAG}` = '{store.parent}'")


def steps(store, run_id, metric="test_accuracy"):
    return sorted(m.step for m in store.client.get_metric_history(run_id, metric))


def test_one_child_run_per_trial_with_its_params_across_restarts(store):
    first = driver(store)
    first.on_trial_start(0, [], trial("t1"))
    first.on_trial_restore(0, [], trial("t1"))
    first.on_trial_start(0, [], trial("t2"))
    driver(store).on_trial_restore(0, [], trial("t1"))  # a restarted driver finds the run by its trial_id tag
    runs = children(store)
    assert sorted(r.data.tags[runrecord.TRIAL_TAG] for r in runs) == ["t1", "t2"]
    t1 = next(r for r in runs if r.data.tags[runrecord.TRIAL_TAG] == "t1")
    assert (t1.data.params["p"], t1.data.params["seed"], t1.data.params["method"]) == ("0.7", "1", "slt")
    assert t1.data.params["T"] == "4" and t1.data.tags["sweep"] == "toy-demo-1" and t1.info.status == "RUNNING"


def test_each_epoch_is_logged_once_even_when_reported_again(store):
    first = driver(store)
    for n in (1, 2):
        first.on_trial_result(0, [], trial(), epoch(n))
    first.on_trial_result(0, [], trial(), epoch(2))  # a resumed trial reports its last epoch again
    driver(store).on_trial_result(0, [], trial(), epoch(2))  # ... also to a restarted driver
    (run,) = children(store)
    assert steps(store, run.info.run_id) == [1, 2]
    assert steps(store, run.info.run_id, "full_budget") == [1, 2]
    assert "phase" not in run.data.metrics and "timestamp" not in run.data.metrics


def test_backfill_after_a_driver_restart_logs_the_missed_epochs_once(store, tmp_path):
    driver(store).on_trial_result(0, [], trial(), epoch(1))
    # the driver was down while the trial reported epochs 2 and 3; its final checkpoint holds the record
    checkpoint = tmp_path / "checkpoint_000002"
    checkpoint.mkdir()
    history = [{k: v for k, v in epoch(n).items() if k not in ("timestamp", "full_budget")} for n in (1, 2, 3)]
    (checkpoint / runrecord.METRICS_FILE).write_text(json.dumps(
        {"history": history, "total_epochs": 3, "sparsity": {"pruned_fraction": 0.7}}))
    (checkpoint / runrecord.ENERGY_TABLE_FILE).write_text("[]")
    done = trial(checkpoint=SimpleNamespace(path=str(checkpoint)), last_result={**epoch(3), "full_budget": True})
    driver(store).on_trial_complete(0, [], done)
    (run,) = children(store)
    run_id = run.info.run_id
    assert steps(store, run_id) == [1, 2, 3]
    assert [m.value for m in sorted(store.client.get_metric_history(run_id, "full_budget"), key=lambda m: m.step)] \
        == [0.0, 0.0, 1.0]
    assert run.info.status == "FINISHED" and run.data.metrics["pruned_fraction"] == 0.7
    assert {k: run.data.tags[k] for k in ("status", "full_budget", "early_stopped")} == {
        "status": "finished", "full_budget": "true", "early_stopped": "false"}
    assert sorted(a.path for a in store.client.list_artifacts(run_id)) == [runrecord.ENERGY_TABLE_FILE,
                                                                           runrecord.METRICS_FILE]


def test_a_stopped_trial_is_finished_and_early_stopped(store):
    callback = driver(store)
    callback.on_trial_result(0, [], trial(), epoch(1))
    callback.on_trial_complete(0, [], trial(last_result=epoch(1)))
    (run,) = children(store)
    assert (run.info.status, run.data.tags["full_budget"], run.data.tags["early_stopped"]) == (
        "FINISHED", "false", "true")


def test_lost_trials_are_closed_killed_with_a_reason_and_known_ones_kept(store):
    callback = driver(store)
    callback.on_trial_start(0, [], trial("known"))
    callback.on_trial_start(0, [], trial("lost"))
    close_running_children(store.client, store.experiment, store.parent, {"known"}, "lost", LOST_REASON)
    runs = {r.data.tags[runrecord.TRIAL_TAG]: r for r in children(store)}
    assert runs["known"].info.status == "RUNNING"
    assert runs["lost"].info.status == "KILLED" and runs["lost"].data.tags["status"] == "lost"
    assert "driver was killed" in runs["lost"].data.tags["reason"]


class Flaky:
    """An MlflowClient whose server can be taken down: every call then raises, as a refused connection does."""

    def __init__(self, client):
        self.client, self.down = client, False

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def call(*args, **kwargs):
            if self.down:
                raise ConnectionError("Connection refused")
            return method(*args, **kwargs)
        return call


def test_records_made_while_mlflow_is_down_are_held_and_delivered_once_in_order(store, monkeypatch, caplog):
    monkeypatch.setattr("sweep.tracking.RETRY_EVERY_S", 0.0)
    callback = driver(store)
    callback._client = flaky = Flaky(store.client)
    callback.on_trial_start(0, [], trial("t1"))
    callback.on_trial_result(0, [], trial("t1"), epoch(1))
    flaky.down = True  # the server goes away: the trial goes on reporting
    callback.on_trial_result(0, [], trial("t1"), epoch(2))
    callback.on_trial_start(0, [], trial("t2"))  # a trial that starts during the outage gets its run later
    callback.on_trial_result(0, [], trial("t2"), epoch(1))
    callback.on_step_end(0, [])
    assert len(callback.outbox.pending) == 3 and [steps(store, r.info.run_id) for r in children(store)] == [[1]]
    flaky.down = False
    callback.on_trial_result(0, [], trial("t1"), epoch(3))
    callback.on_trial_complete(0, [], trial("t1", last_result=epoch(3)))
    callback.on_experiment_end([])
    runs = {r.data.tags[runrecord.TRIAL_TAG]: r for r in children(store)}
    assert sorted(runs) == ["t1", "t2"] and not callback.outbox.pending
    assert steps(store, runs["t1"].info.run_id) == [1, 2, 3] and steps(store, runs["t2"].info.run_id) == [1]
    assert runs["t1"].info.status == "FINISHED" and runs["t1"].data.tags["full_budget"] == "true"
    said = [r.getMessage() for r in caplog.records if r.name == "sweep.tracking"]
    assert len(said) == 2 and "does not answer" in said[0] and "answers again" in said[1]


def test_an_outage_longer_than_the_bound_stops_the_sweep_in_one_line(store, monkeypatch):
    from sweep.tracking import TrackingOutage

    monkeypatch.setattr("sweep.tracking.RETRY_EVERY_S", 0.01)
    callback = MlflowSweepCallback(store.uri, store.experiment, store.parent, TAGS, outage_limit_s=0.05)
    callback._client = flaky = Flaky(store.client)
    flaky.down = True
    callback.on_trial_start(0, [], trial("t1"))  # held; the bound is not yet reached
    with pytest.raises(TrackingOutage) as stopped:
        callback.on_experiment_end([])  # waits for the server until the bound
    message = str(stopped.value)
    assert "has not answered for" in message and "--resume" in message and "\n" not in message
    assert children(store) == []  # nothing was half-written


def test_a_restarted_trial_keeps_its_run_and_counts_the_restart(store):
    callback = driver(store)
    callback.on_trial_start(0, [], trial("t1"))
    callback.on_trial_result(0, [], trial("t1"), epoch(1))
    restarted = SimpleNamespace(**vars(trial("t1")), run_metadata=SimpleNamespace(num_failures=1))
    callback.on_trial_recover(0, [], restarted)
    callback.on_trial_start(0, [], trial("t1"))  # Tune starts it again from its checkpoint
    callback.on_trial_result(0, [], trial("t1"), epoch(1))  # the epoch it had reported, again
    callback.on_trial_result(0, [], trial("t1"), epoch(2))
    (run,) = children(store)
    assert run.data.tags["restarts"] == "1" and run.data.tags["restart_reason"] == "unknown error"
    assert steps(store, run.info.run_id) == [1, 2]


def test_a_write_mlflow_refuses_is_raised_at_once_not_held_as_an_outage(store):
    callback = driver(store)
    callback.on_trial_start(0, [], trial("t1"))
    class Refusing(Flaky):
        def __getattr__(self, name):
            if name == "log_batch":
                def refuse(*args, **kwargs):
                    raise ValueError("INVALID_PARAMETER_VALUE: metric value is not a number")
                return refuse
            return super().__getattr__(name)

    callback._client = Refusing(store.client)
    with pytest.raises(ValueError, match="INVALID_PARAMETER_VALUE"):
        callback.on_trial_result(0, [], trial("t1"), epoch(1))
    assert callback.outbox.down_since is None  # not taken for the server being down


def test_a_callback_pickled_by_an_older_version_is_restored_with_the_new_defaults(store, monkeypatch):
    import pickle

    old = driver(store)
    state = old.__getstate__()
    del state["outage_limit_s"], state["_outbox"]  # what a sweep started before the Outbox pickled
    restored = MlflowSweepCallback.__new__(MlflowSweepCallback)
    restored.__setstate__(state)
    monkeypatch.setenv("SLT_TRACKING_OUTAGE_S", "42")  # the resumed sweep's --tracking-outage-s
    assert restored.outbox.limit_s == 42.0 and pickle.loads(pickle.dumps(restored)).outage_limit_s == 600.0
    restored.on_trial_start(0, [], trial("t9"))
    assert [r.data.tags[runrecord.TRIAL_TAG] for r in children(store)] == ["t9"]


DATA = {"name": "digits 16px", "source": "sklearn.datasets.load_digits", "digest": "beb5e0ad916885a1",
        "train": 1295, "validation": 143, "test": 359}


def test_child_runs_are_named_by_what_they_are_and_log_their_dataset_once(store):
    callback = MlflowSweepCallback(store.uri, store.experiment, store.parent, TAGS, searched=("p", "decay"))
    callback.on_trial_start(0, [], trial("t1"))
    for n in (1, 2):
        callback.on_trial_result(0, [], trial("t1"), {**epoch(n), runrecord.DATA_KEY: DATA})
    # a driver restarted after a kill sends it again: MLflow keeps one input per dataset and run
    again = MlflowSweepCallback(store.uri, store.experiment, store.parent, TAGS, searched=("p", "decay"))
    again.on_trial_result(0, [], trial("t1"), {**epoch(3), runrecord.DATA_KEY: DATA})
    (run,) = children(store)
    assert run.info.run_name == "slt p=0.7 λ=0.5 s1"  # an SNN ticket: its p and λ (the default), its seed
    (data,) = run.inputs.dataset_inputs
    assert (data.dataset.name, data.dataset.digest) == ("digits 16px", "beb5e0ad916885a1")
    assert json.loads(data.dataset.profile) == {"num_rows": 1295, "train": 1295, "validation": 143, "test": 359}
    assert json.loads(data.dataset.source) == {"uri": "sklearn.datasets.load_digits"}
    assert [t.value for t in data.tags if t.key == "mlflow.data.context"] == ["training"]
    assert steps(store, run.info.run_id) == [1, 2, 3]


def test_run_names_leave_out_what_a_method_does_not_use():
    from slt.config import make_config

    searched = ("method", "p", "T", "decay", "seed")
    assert runrecord.trial_run_name(make_config(method="ann", p=0.3, seed=2), searched) == "ann s2"
    assert runrecord.trial_run_name(make_config(method="snn", T=6, decay=0.25), searched) == "snn T=6 λ=0.25 s0"
    assert runrecord.trial_run_name(make_config(method="lt", p=1 / 3), searched) == "lt p=0.333 s0"
    assert runrecord.trial_run_name(make_config(method="mpslt", p=0.5, decay=0.31), ()) == "mpslt s0"


def test_experiments_are_marked_model_training_and_get_the_sweep_s_columns(store):
    from sweep.tracking import experiment_id, share_columns

    made = experiment_id(store.client, "fresh")
    assert store.client.get_experiment(made).tags[runrecord.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert experiment_id(store.client, "toy") == store.experiment  # an older sweep's experiment is marked now
    assert store.client.get_experiment(store.experiment).tags[runrecord.EXPERIMENT_KIND_TAG] == "custom_model_development"
    store.client.set_experiment_tag(made, runrecord.EXPERIMENT_KIND_TAG, "genai_development")
    experiment_id(store.client, "fresh")  # a kind the user chose is kept
    assert store.client.get_experiment(made).tags[runrecord.EXPERIMENT_KIND_TAG] == "genai_development"
    share_columns(store.client, made, "pareto-demo-1", ("p", "T"), ["val_accuracy", "energy_mj_effective"])
    view = json.loads(store.client.get_experiment(made).tags["mlflow.sharedViewState.pareto-demo-1"])
    assert view["selectedColumns"] == [
        "attributes.`Dataset`", "params.`method`", "params.`p`", "params.`T`", "params.`seed`",
        "metrics.`val_accuracy`", "metrics.`energy_mj_effective`", "metrics.`test_accuracy`", "metrics.`energy_mj`",
        "metrics.`epoch`"]
    assert view["columnOrder"] == ["attributes.`Run Name`", *view["selectedColumns"]]
    assert view["columnWidths"] == {"attributes.`Run Name`": 250}
    assert runrecord.ui_url("http://127.0.0.1:5000/", "7", "pareto-demo-1") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=pareto-demo-1")
