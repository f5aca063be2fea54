"""Search spaces: bundled files validate; bad files, profiles and overrides get one-line errors."""

import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from slt.errors import InputError
from app.sweep import main
from sweep.engine import param_space, searched_fields, seed_points
from sweep.space import PROFILES, grid_variants, load_space

BUNDLED = ["decay_rate", "decay_grid", "pruning_ratio", "timestep", "finetune", "pareto", "patch_ratio", "balance"]


@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("profile", PROFILES)
def test_bundled_spaces_validate_for_every_profile(name, profile):
    space, info = load_space(name, profile)
    assert space.name == name and info["profile"] == profile and len(info["sha256"]) == 16


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


GOOD = """
name: toy
base: {model: vgg9, method: slt, dataset: digits}
searched:
  decay: {type: uniform, low: 0.1, high: 0.9}
search: {algorithm: optuna, sampler: gp, seed_points: 4}
profiles:
  demo: {num_samples: 3}
"""


@pytest.mark.parametrize("text,overrides,field", [
    (GOOD.replace("low: 0.1", "low: 0.0"), [], "searched.decay"),
    (GOOD.replace("high: 0.9", "high: 1.5"), [], "searched.decay"),
    (GOOD.replace("low: 0.1", "low: 0.95"), [], "searched.decay"),
    (GOOD.replace("method: slt", "method: magic"), [], "base.method"),
    (GOOD.replace("sampler: gp", "sampler: cmaes"), [], "search.sampler"),
    (GOOD.replace("decay: {", "lambda: {"), [], "searched.lambda"),
    (GOOD + "foo: 1\n", [], "foo"),
    (GOOD, ["num_samples=0"], "num_samples"),
    (GOOD, ["base.T=0"], "base.T"),
    (GOOD, ["base.p=1.0"], "base.p"),
    (GOOD, ["nonsense"], "set"),
    (GOOD.replace("type: uniform, low: 0.1, high: 0.9", "type: grid, values: [0.2, 0.8]"), [], "searched.decay"),
    (GOOD, ["objectives=[{metric: val_accuracy, mode: max}, {metric: energy_mj, mode: min}]",
            "search.algorithm=grid", "searched={}"], "objectives"),
    (GOOD, ["objectives=[{metric: test_accuracy, mode: max}]"], "objectives.0.metric"),  # the test set never chooses
])
def test_bad_space_is_one_line_naming_the_field(tmp_path, text, overrides, field):
    with pytest.raises(InputError) as caught:
        load_space(write(tmp_path, text), "demo", overrides)
    assert caught.value.field == field, str(caught.value)
    assert "\n" not in str(caught.value)


def test_malformed_yaml_and_unknown_profile(tmp_path):
    with pytest.raises(InputError, match=r"^space: .* is not valid YAML \(line \d+"):
        load_space(write(tmp_path, "name: [unclosed\n"), "demo")
    with pytest.raises(InputError, match="^profile: unknown profile 'huge'; allowed: demo, cpu, full"):
        load_space(write(tmp_path, GOOD), "huge")
    with pytest.raises(InputError, match="^profile: .* has no profile 'full'"):
        load_space(write(tmp_path, GOOD), "full")
    with pytest.raises(InputError, match="^space: no search space named 'nope'"):
        load_space("nope", "demo")


def test_overrides_are_yaml_values_applied_after_the_profile(tmp_path):
    space, info = load_space(write(tmp_path, GOOD), "demo", ["num_samples=5", "base.epochs=3", "base.width=0.5"])
    assert space.num_samples == 5 and space.base["epochs"] == 3 and space.base["width"] == 0.5
    assert info["overrides"] == ["num_samples=5", "base.epochs=3", "base.width=0.5"]


def test_seed_points_are_evenly_spaced_inside_the_bounds(tmp_path):
    space, _ = load_space(write(tmp_path, GOOD), "demo")
    assert [round(p["decay"], 6) for p in seed_points(space)] == [0.2, 0.4, 0.6, 0.8]


def test_trials_measure_energy_each_epoch_only_where_an_objective_or_a_scheduler_reads_it():
    decay, _ = load_space("decay_rate", "demo")  # val_accuracy only, no scheduler: energy after the last epoch
    pareto, _ = load_space("pareto", "demo")  # energy_mj is an objective
    asha, _ = load_space("decay_rate", "demo", ["scheduler.type=asha"])  # a trial may end at any epoch
    assert [s.energy_each_epoch for s in (decay, pareto, asha)] == [False, True, True]
    assert param_space(decay, decay.base)["energy_each_epoch"] is False


def test_grid_variants_cross_grids_add_includes_and_repeat_seeds_seed_major_baselines_first():
    space, _ = load_space("pruning_ratio", "cpu")
    variants = grid_variants(space)
    assert len(variants) == (2 + 4 * 4) * 3
    dense = [{"method": "ann", "optimizer": "adam", "lr": 0.002}, {"method": "snn", "optimizer": "adam", "lr": 0.002}]
    lt = {"method": "lt", "optimizer": "sgd", "lr": 0.05}  # by_method: each method's optimiser and lr
    # every configuration's seed 0 (baselines first), then every seed 1, then every seed 2
    assert variants[:3] == [{**dense[0], "seed": 0}, {**dense[1], "seed": 0}, {**lt, "p": 0.3, "seed": 0}]
    assert variants[17] == {"method": "mpslt", "optimizer": "sgd", "lr": 0.1, "p": 0.9, "seed": 0}
    assert variants[6] == {"method": "slt", "optimizer": "sgd", "lr": 0.2, "p": 0.3, "seed": 0}
    assert variants[18] == {**dense[0], "seed": 1}
    assert [v["seed"] for v in variants] == [0] * 18 + [1] * 18 + [2] * 18
    params = param_space(space, space.base)
    assert "method" not in params and "p" not in params and "lr" not in params and params["epochs"] == 100
    assert searched_fields(space) == ("method", "p", "optimizer", "lr", "seed")


def test_by_method_fields_sit_under_what_a_configuration_sets_itself(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: {model: vgg9, dataset: digits, lr: 0.01}\n"
                    "searched:\n  method: {type: grid, values: [slt, mpslt]}\n"
                    "include:\n  - {method: snn}\n  - {method: slt, lr: 0.05}\n"
                    "by_method:\n  slt: {optimizer: sgd, lr: 0.3}\n  snn: {weight_decay: 0.0}\n"
                    "profiles: {demo: {}}\n")
    space, _ = load_space(str(path))
    assert grid_variants(space) == [{"method": "snn", "weight_decay": 0.0},
                                    {"method": "slt", "optimizer": "sgd", "lr": 0.05},
                                    {"method": "slt", "optimizer": "sgd", "lr": 0.3}, {"method": "mpslt"}]
    packed = param_space(space, space.base)["variant"]["grid_search"]  # the base's lr where none is set
    assert packed[3] == {"method": "mpslt", "lr": 0.01} and packed[0] == {"method": "snn", "lr": 0.01,
                                                                          "weight_decay": 0.0}
    assert packed[2] == {"method": "slt", "optimizer": "sgd", "lr": 0.3}


@pytest.mark.parametrize("by_method,field", [
    ("{resnet: {lr: 0.1}}", "by_method.resnet"),
    ("{slt: {seed: 3}}", "by_method.slt.seed"),
    ("{slt: {colour: red}}", "by_method.slt.colour"),
    ("{slt: {method: snn}}", "by_method.slt.method"),
    ("{slt: {lr: -1}}", "by_method.slt.lr"),
    ("{slt: {p: 0.2}}", "by_method.slt.p"),  # p is searched here
])
def test_bad_by_method_is_one_line_naming_the_field(tmp_path, by_method, field):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: {model: vgg9, dataset: digits}\n"
                    "searched:\n  method: {type: grid, values: [slt]}\n  p: {type: grid, values: [0.5]}\n"
                    f"by_method: {by_method}\nprofiles: {{demo: {{}}}}\n")
    with pytest.raises(InputError) as err:
        load_space(str(path))
    assert err.value.field == field


@pytest.mark.parametrize("searched,extra,field,problem", [
    ("  method: {type: choice, values: [slt, mpslt]}\n", "num_samples: 2\n", "by_method", "a sampled method"),
    ("  method: {type: grid, values: [mpslt]}\n", "", "by_method.slt", "it runs: mpslt"),  # no slt trial
    ("  method: {type: grid, values: [slt]}\n  finetune_epochs: {type: grid, values: [0, 20]}\n", "",
     "by_method.slt.epochs", "must exceed"),  # slt's own 10 epochs cannot hold 20 of fine-tuning
])
def test_by_method_is_checked_against_the_configurations_that_run(tmp_path, searched, extra, field, problem):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nbase: {{model: vgg9, dataset: digits}}\nsearched:\n{searched}{extra}"
                    "by_method: {slt: {epochs: 10}}\nprofiles: {demo: {}}\n")
    with pytest.raises(InputError) as err:
        load_space(str(path))
    assert err.value.field == field and problem in err.value.problem, err.value


def test_by_method_needs_a_grid_search(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: {model: vgg9, dataset: digits}\nsearched:\n  decay: {type: uniform, low: 0.1, "
                    "high: 0.9}\nsearch: {algorithm: optuna}\nby_method: {slt: {lr: 0.1}}\nprofiles: {demo: {}}\n")
    with pytest.raises(InputError) as err:
        load_space(str(path))
    assert err.value.field == "by_method" and "grid" in err.value.problem


GOOD_RUN = GOOD.replace("profiles:", "max_concurrent: 1\nprofiles:")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv,field", [
    (["--profile", "huge"], "profile"),
    (["--set", "base.decay=2"], "base.decay"),
    (["--set", "base.dataset=cifar10", "--set", "base.data_dir=/nonexistent/cifar"], "data_dir"),
    (["--tracking-uri", "http://127.0.0.1:{port}"], "tracking_uri"),
    (["--resume"], "resume"),
])
def test_sweep_bad_input_fails_in_one_line_before_anything_starts(tmp_path, capsys, monkeypatch, argv, field):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{port}", str(free_port())) for a in argv]
    if "--tracking-uri" not in argv:
        argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    started = time.perf_counter()
    code = main("decay_rate", [*argv, "--storage", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"sweep: error: {field}: ") and err.count("\n") == 1, err
    assert time.perf_counter() - started < 20
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_resume_refuses_a_sweep_started_from_another_space_or_other_overrides(tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "results" / "decay_rate-demo-20260101-000000"
    folder.mkdir(parents=True)
    _, info = load_space("decay_rate", "demo")
    _, with_set = load_space("decay_rate", "demo", ["num_samples=4"])
    before_content_hash = {k: v for k, v in info.items() if k != "content_sha256"}  # a sweep.json of before
    for started_from, what in (({**info, "content_sha256": "0123456789abcdef"}, "what its profile runs"),
                               (with_set, "--set ['num_samples=4']"),
                               ({**before_content_hash, "sha256": "0123456789abcdef"}, "sha256 0123456789abcdef")):
        (folder / "sweep.json").write_text(json.dumps({"parent_run_id": "p", "space": started_from, "name": folder.name}))
        code = main("decay_rate", ["--resume", "--storage", str(tmp_path / "results"),
                                   "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("sweep: error: resume: the latest sweep decay_rate-demo-20260101-000000 ")
        assert what in err and "run without --resume for a new sweep" in err and err.count("\n") == 1, err
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was opened


def test_resume_compares_what_the_profile_runs_so_comments_and_other_profiles_may_change(tmp_path):
    from sweep.engine import check_same_space
    from sweep.space import resolve_space_file

    source = resolve_space_file("decay_rate").read_text()
    path = tmp_path / "decay_rate.yaml"
    path.write_text(source)
    _, started = load_space(str(path), "demo")
    assert "num_samples: 20" in source and "epochs: 25," in source
    path.write_text("# a note added between sittings\n" + source.replace("num_samples: 20", "num_samples: 30"))
    _, edited = load_space(str(path), "demo")  # a comment and the full profile changed
    assert edited["sha256"] != started["sha256"] and edited["content_sha256"] == started["content_sha256"]
    check_same_space("s", dict(started), edited)  # resumable
    path.write_text(source.replace("epochs: 25,", "epochs: 26,"))  # the demo profile itself
    _, changed = load_space(str(path), "demo")
    with pytest.raises(InputError, match="what its profile runs .* differs"):
        check_same_space("s", dict(started), changed)
    _, with_set = load_space(str(path), "demo", ["base.epochs=25"])  # --set back to what was run
    check_same_space("s", dict(started), with_set)

    # a sweep.json written before the content hash: compared by file and overrides, then given the hash
    legacy = {k: v for k, v in started.items() if k != "content_sha256"}
    with pytest.raises(InputError, match="the file or the --set overrides differ"):
        check_same_space("s", dict(legacy), edited)
    check_same_space("s", legacy, started)
    assert legacy["content_sha256"] == started["content_sha256"]  # so the next sitting may follow a comment edit
    check_same_space("s", legacy, edited)


@pytest.mark.parametrize("place,field", [("storage", "storage"), ("reports", "reports"), ("tracking", "tracking_uri"),
                                         ("sysfs", "storage"), ("full", "storage")])
def test_a_place_that_cannot_be_written_is_refused_in_one_line_before_ray_starts(tmp_path, capsys, monkeypatch,
                                                                                place, field):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # no folder can be made below a file, even by root (CI runs as root)
    places = {"storage": tmp_path / "results", "reports": tmp_path / "reports", "tracking": tmp_path / "mlflow.db"}
    if place in places:
        places[place] = blocker / "below" / ("mlflow.db" if place == "tracking" else "")
    elif place == "sysfs":
        places["storage"] = Path("/sys/slt-results")  # a read-only file system
    else:  # a full disk: the storage folder is fine but has no room left
        import shutil

        monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=2**30, used=2**30, free=2**20))
    monkeypatch.chdir(tmp_path)
    code = main("decay_rate", ["--storage", str(places["storage"]), "--reports", str(places["reports"]),
                               "--tracking-uri", f"sqlite:///{places['tracking']}", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"sweep: error: {field}: ") and err.count("\n") == 1, err
    assert ("has 1.0 MiB free; a sweep needs at least 64 MiB" in err) if place == "full" else ("cannot write to" in err)
    assert not list(tmp_path.glob("results/decay_rate-*"))  # no sweep folder, no parent run: Ray never started
    assert not (tmp_path / "mlflow.db").exists()  # nor a tracking database


def test_first_ctrl_c_asks_tune_to_stop_and_a_second_stops_at_once(capsys):
    import signal

    from sweep.engine import graceful_interrupt

    asked = []
    previous_usr1 = signal.getsignal(signal.SIGUSR1)
    try:
        with graceful_interrupt() as interrupt:
            with pytest.raises(KeyboardInterrupt):  # before Tune listens (no SIGUSR1 handler): at once
                signal.raise_signal(signal.SIGINT)
            assert not interrupt.requested
            signal.signal(signal.SIGUSR1, lambda *_: asked.append("stop"))  # what tune.run installs
            signal.raise_signal(signal.SIGINT)
            assert interrupt.requested and asked == ["stop"]
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
            assert asked == ["stop"]
    finally:
        signal.signal(signal.SIGUSR1, previous_usr1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    assert "Ctrl-C again stops at once" in capsys.readouterr().err


def test_sittings_are_kept_in_sweep_json_and_a_sweep_from_before_them_counts_its_first_driver(tmp_path, monkeypatch):
    import json

    from mlflow.tracking import MlflowClient

    from sweep import engine
    from sweep.cli import sitting_text

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.create_run(client.create_experiment("s"), start_time=1_000_000).info.run_id
    client.set_terminated(parent, "KILLED", end_time=1_600_000)  # its driver was interrupted after 600 s
    record = {"parent_run_id": parent}  # a sweep.json written before sittings were kept
    sweep = SimpleNamespace(record=record, sweep_dir=tmp_path, client=client)
    clock = iter([5000.0, 5300.0, 5300.0])
    monkeypatch.setattr(engine.time, "time", lambda: next(clock))
    engine.begin_sitting(sweep, engine.open_parent_run(sweep))  # the resumed parent is RUNNING again
    assert client.get_run(parent).info.status == "RUNNING"
    metrics = {m.key: m.value for m in engine.end_sitting(sweep, "finished")}
    sittings = json.loads((tmp_path / engine.SWEEP_FILE).read_text())["sittings"]
    assert sittings == [{"started": 1000.0, "ended": 1600.0, "outcome": "interrupted (recorded before sittings "
                                                                       "were kept)"},
                        {"started": 5000.0, "ended": 5300.0, "outcome": "finished"}]
    assert metrics == {"sittings": 2, "wall_time_s": 900.0}
    assert sitting_text(sittings) == "wall time 0.25 h over 2 sittings (1 resume)"
    killed = [*sittings, {"started": 6000.0, "ended": None, "outcome": "running, or killed"}]
    assert sitting_text(killed) == "wall time 0.25 h over 3 sittings (2 resumes; 1 untimed)"

    sweep.record = {"parent_run_id": parent}  # its driver was killed: the parent stayed RUNNING, so untimed
    clock = iter([7000.0])
    engine.begin_sitting(sweep, engine.open_parent_run(sweep))
    assert [s["ended"] for s in sweep.record["sittings"]] == [None, None]
    assert sweep.record["sittings"][0]["outcome"] == "unknown (recorded before sittings were kept)"


def test_a_sweep_recorded_before_the_content_hash_is_given_it_on_disk_by_its_next_sitting(tmp_path, monkeypatch):
    import json

    from sweep.engine import SweepOptions, begin_sitting, check_inputs

    monkeypatch.chdir(tmp_path)
    space, info = load_space("decay_rate", "demo")
    folder = tmp_path / "results" / "decay_rate-demo-20260101-000000"
    folder.mkdir(parents=True)
    legacy = {k: v for k, v in info.items() if k != "content_sha256"}
    (folder / "sweep.json").write_text(json.dumps({"parent_run_id": "p", "space": legacy, "name": folder.name}))
    sweep = check_inputs(space, info, SweepOptions(storage=str(tmp_path / "results"), resume=True,
                                                   tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    begin_sitting(sweep)
    written = json.loads((folder / "sweep.json").read_text())
    assert written["space"] == {**legacy, "content_sha256": info["content_sha256"]}
    assert len(written["sittings"]) == 1 and written["sittings"][0]["ended"] is None
