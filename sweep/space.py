"""Search spaces: one YAML file per experiment, validated before anything runs.

A file has a `base` run config (slt.config.TrainConfig fields), `searched` parameters, the search
algorithm, objectives, scheduler, budget, resources and named `profiles` (demo / cpu / full) whose
keys override the top level. `--set key=value` overrides (dotted keys, YAML values) are applied
after the profile and validated the same way. Every error is one line naming the field.
"""

import copy
import hashlib
import itertools
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runrecord import ENERGY_METRICS, OBJECTIVES, VAL_ACCURACY
from slt.config import TrainConfig, make_config
from slt.methods import METHODS
from slt.errors import InputError

PROFILES = ("demo", "cpu", "full")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Grid(_Strict):
    """Every value, each a trial (with `repeats` seeds); packed with `include` into one grid axis."""

    type: Literal["grid"]
    values: list[Any] = Field(min_length=1)
    grid: ClassVar[bool] = True
    continuous: ClassVar[bool] = False

    def to_tune(self):
        return None  # grid values travel as whole variants (runrecord.pack_variants)

    def to_optuna(self, extra: list[Any]):
        return CategoricalDistribution(list(dict.fromkeys([*self.values, *extra])))

    def probes(self) -> list[Any]:
        """The values a validity check tries (every value a trial can get, or the extremes of a range)."""
        return list(self.values)


class Choice(Grid):
    """A value per sample, drawn by the search algorithm."""

    type: Literal["choice"]
    grid: ClassVar[bool] = False

    def to_tune(self):
        from ray import tune

        return tune.choice(self.values)


class Uniform(_Strict):
    type: Literal["uniform", "loguniform"]
    low: float
    high: float
    grid: ClassVar[bool] = False
    continuous: ClassVar[bool] = True

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        return self

    def to_tune(self):
        from ray import tune

        return (tune.uniform if self.type == "uniform" else tune.loguniform)(self.low, self.high)

    def to_optuna(self, extra: list[Any]):
        return FloatDistribution(self.low, self.high, log=self.type == "loguniform")

    def probes(self) -> list[float]:
        return [self.low, self.high - 1e-9 * (self.high - self.low)]  # samples lie in [low, high)


class IntRange(_Strict):
    type: Literal["int"]
    low: int
    high: int  # inclusive
    grid: ClassVar[bool] = False
    continuous: ClassVar[bool] = False

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def to_tune(self):
        from ray import tune

        return tune.randint(self.low, self.high + 1)

    def to_optuna(self, extra: list[Any]):
        return IntDistribution(self.low, self.high)

    def probes(self) -> list[int]:
        return [self.low, self.high]


Parameter = Annotated[Grid | Choice | Uniform | IntRange, Field(discriminator="type")]


class Objective(_Strict):
    metric: Literal[tuple(OBJECTIVES)]
    mode: Literal["max", "min"]

    @field_validator("metric", mode="before")
    @classmethod
    def _not_test(cls, value):
        if isinstance(value, str) and value.startswith("test_"):
            raise ValueError(f"{value} is measured on the test set, which is reported but never chooses; allowed: "
                             f"{', '.join(OBJECTIVES)}")
        return value


class Search(_Strict):
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    sampler: Literal["gp", "tpe", "nsga2"] = "tpe"  # optuna only
    seed_points: int | list[dict[str, Any]] = 0  # evenly spaced first points (1-D), or explicit configs
    seed: int = 0
    population_size: int = Field(default=8, ge=2)  # nsga2


class Scheduler(_Strict):
    """Early stopping: `asha` on the first objective (Ray Tune's), `mo_asha` on all of them (sweep.mo_asha);
    rungs at epochs grace_period x reduction_factor^k below the trials' full budget."""

    type: Literal["none", "asha", "mo_asha"] = "none"
    grace_period: int = Field(default=1, ge=1)
    reduction_factor: float = Field(default=2.0, gt=1.0)


class Resources(_Strict):
    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)


class SearchSpace(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    base: dict[str, Any] = {}
    searched: dict[str, Parameter] = {}
    include: list[dict[str, Any]] = []  # extra configurations run besides the grid (e.g. dense baselines)
    by_method: dict[str, dict[str, Any]] = {}  # run-config fields per method over base (e.g. each method's lr)
    repeats: int = Field(default=1, ge=1)  # seeds 0..repeats-1 for every configuration (grid/random)
    search: Search = Search()
    objectives: list[Objective] = Field(default=[Objective(metric=VAL_ACCURACY, mode="max")], min_length=1)
    scheduler: Scheduler = Scheduler()
    num_samples: int = Field(default=1, ge=1)
    max_concurrent: int = Field(default=2, ge=1)
    resources: Resources = Resources()
    max_failures: int = Field(default=1, ge=0)  # retries of a failed trial from its last checkpoint
    checkpoint_every: int = Field(default=1, ge=1)  # epochs
    energy_batch: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _consistent(self):
        unknown = [k for k in self.searched if k not in TrainConfig.model_fields]
        if unknown:
            raise ValueError(f"searched.{unknown[0]}: not a run-config field; allowed: "
                             f"{', '.join(TrainConfig.model_fields)}")
        if self.include and self.search.algorithm != "grid":
            raise ValueError("include: extra configurations need search.algorithm grid")
        for method, fields in self.by_method.items():
            if method not in METHODS:
                raise ValueError(f"by_method.{method}: not a method; allowed: {', '.join(METHODS)}")
            bad = [k for k in fields if k not in TrainConfig.model_fields or k in ("method", "seed")]
            if bad:
                raise ValueError(f"by_method.{method}.{bad[0]}: not a run-config field a method may set; allowed: "
                                 f"{', '.join(k for k in TrainConfig.model_fields if k not in ('method', 'seed'))}")
            searched = [k for k in fields if k in self.searched]
            if searched:
                raise ValueError(f"by_method.{method}.{searched[0]}: is searched; a field is set per method or "
                                 "searched, not both")
        if self.by_method and self.search.algorithm != "grid":
            raise ValueError("by_method: per-method fields need search.algorithm grid (with one method, set them "
                             "in base)")
        if self.by_method and "method" in self.searched and not self.searched["method"].grid:
            raise ValueError("by_method: needs method as a grid (or fixed in base or include); a sampled method "
                             "cannot carry its own fields")
        run = {combo.get("method", self.default_method) for combo in _combinations(self)}
        unused = [m for m in self.by_method if m not in run]
        if unused:
            raise ValueError(f"by_method.{unused[0]}: no configuration of this sweep runs {unused[0]}; it runs: "
                             f"{', '.join(sorted(run))}")
        if self.search.algorithm == "optuna":
            grids = [k for k, v in self.searched.items() if v.grid]
            if grids:
                raise ValueError(f"searched.{grids[0]}: optuna cannot search a grid; use type choice")
            if self.repeats > 1:
                raise ValueError("repeats: optuna searches one seed per trial; search `seed` or use grid/random")
        elif len(self.objectives) > 1:
            raise ValueError("objectives: several objectives need search.algorithm optuna")
        return self

    @property
    def default_method(self) -> str:
        """The method of a configuration that sets none: base's, else the run config's default."""
        return self.base.get("method", TrainConfig.model_fields["method"].default)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def energy_each_epoch(self) -> bool:
        """Whether trials measure energy after every epoch: when an objective reads it, or when a scheduler
        may end a trial at any epoch (its last result then carries energy). Otherwise at the end only:
        measuring it costs ~12 % of a demo trial's epoch."""
        return self.scheduler.type != "none" or any(o.metric in ENERGY_METRICS for o in self.objectives)


def grid_variants(space: SearchSpace) -> list[dict]:
    """Every configuration of `include` (the baselines) and the grid parameters, each over seeds
    0..repeats-1, in the order trials start: seed-major, baselines first. A long sweep stopped part-way
    then holds whole tables with fewer seeds (every cell's seed 0 before any seed 1), never cells
    without their baseline."""
    combos = [{**space.by_method.get(combo.get("method", space.default_method), {}), **combo}
              for combo in _combinations(space)]  # each method's own fields, under what a combination sets
    if space.repeats > 1:
        combos = [{**combo, "seed": seed} for seed in range(space.repeats) for combo in combos]
    return combos



def _combinations(space: SearchSpace) -> list[dict]:
    """`include`'s configurations, then every combination of the grid parameters ([{}] for none)."""
    grids = {k: v.values for k, v in space.searched.items() if v.grid}
    combos = [dict(extra) for extra in space.include]
    combos += [dict(zip(grids, values)) for values in itertools.product(*grids.values())] if grids else []
    return combos or [{}]


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise InputError(dotted, f"cannot set a key inside {key!r}, which is not a mapping")
    node[keys[-1]] = value


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "searched":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_space_file(space: str) -> Path:
    """A YAML path, or the name of a bundled search space (e.g. `decay_rate`)."""
    path = Path(space)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise InputError("space", f"{space} does not exist")
        return path.resolve()
    bundled = resources.files("search_spaces") / f"{space}.yaml"
    if not bundled.is_file():
        names = sorted(p.name.removesuffix(".yaml") for p in resources.files("search_spaces").iterdir()
                       if p.name.endswith(".yaml"))
        raise InputError("space", f"no search space named {space!r}; bundled: {', '.join(names)}")
    return Path(str(bundled))


_TAGS = {"grid", "choice", "uniform", "loguniform", "int"}  # discriminator tags pydantic puts in error paths


def _first_error(err: ValidationError) -> InputError:
    """The first validation error as one line: dotted field path, then the problem."""
    first = err.errors()[0]
    field = ".".join(str(part) for part in first["loc"] if part not in _TAGS)
    message = first["msg"].removeprefix("Value error, ")
    if not field and ": " in message:  # a cross-field check names its own field: "field: problem"
        field, message = message.split(": ", 1)
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] != "value_error" and not isinstance(first.get("input"), dict):
        message = f"{first.get('input')!r} is not allowed; {message}"
    return InputError(field or "space", message)


def load_space(space: str, profile: str = "demo", overrides: list[str] | None = None) -> tuple[SearchSpace, dict]:
    """Read, merge (file -> profile -> --set overrides) and validate; returns the space and file info: the
    file, its sha256, the profile, the overrides and `content_sha256`, the hash of the merged space this
    profile runs (a comment or another profile edited leaves it unchanged; what --resume compares)."""
    path = resolve_space_file(space)
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise InputError("space", f"{path} is not valid YAML ({where}: {getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise InputError("space", f"{path} must hold a mapping of fields")
    profiles = raw.pop("profiles", {}) or {}
    if profile not in PROFILES:
        raise InputError("profile", f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    if profile not in profiles:
        raise InputError("profile", f"{path.name} has no profile {profile!r}; it has: {', '.join(profiles) or 'none'}")
    merged = _merge(raw, profiles[profile] or {})
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError("set", f"{item!r} is not KEY=VALUE (e.g. base.epochs=3 or num_samples=4)")
        _set_dotted(merged, key.strip(), yaml.safe_load(value))
    # what this profile runs, with the --set overrides, whatever the comments or the other profiles say
    content = hashlib.sha256(json.dumps(merged, sort_keys=True, default=str).encode()).hexdigest()[:16]
    try:
        result = SearchSpace(**merged)
    except ValidationError as err:
        raise _first_error(err) from None
    _check_run_configs(result)
    info = {"file": str(path), "sha256": hashlib.sha256(text.encode()).hexdigest()[:16], "profile": profile,
            "overrides": list(overrides or []), "content_sha256": content}
    return result, info


def _check_run_configs(space: SearchSpace) -> None:
    """Every configuration the search can produce must be a valid run config (checked at the extremes)."""
    try:
        make_config(**space.base)
    except InputError as err:
        raise InputError(f"base.{err.field}", err.problem) from None
    for index, extra in enumerate(space.include):
        try:
            make_config(**{**space.base, **extra})
        except InputError as err:
            raise InputError(f"include.{index}.{err.field}", err.problem) from None
    for method, fields in space.by_method.items():
        try:
            make_config(**{**space.base, "method": method, **fields})
        except InputError as err:
            raise InputError(f"by_method.{method}.{err.field}", err.problem) from None
    for name, parameter in space.searched.items():
        for value in parameter.probes():
            try:
                make_config(**{**space.base, name: value})
            except InputError as err:
                raise InputError(f"searched.{name}", err.problem) from None
    for index, combo in enumerate(_combinations(space)):  # each as it runs: base, its method's fields, its own
        method = combo.get("method", space.default_method)
        own = space.by_method.get(method, {})
        try:
            make_config(**{**space.base, **own, **combo})
        except InputError as err:
            where = (f"by_method.{method}" if err.field in own and err.field not in combo else
                     f"include.{index}" if index < len(space.include) else
                     "searched" if err.field in space.searched else "base")
            raise InputError(f"{where}.{err.field}", err.problem) from None
