"""Declaring grids, naming their runs, and expanding a grid file into runs.

A grid is data (in the spirit of big_vision sweeps). `experiments/<name>.py`:

  from rec_jax import sweep

  BASE_CONFIG = "configs/ml100k_distill.py"

  def get_grid(arg=None):
    tiny = sweep.is_tiny(arg)
    return sweep.product({"distill.temperature": [1, 4] if tiny else [1, 2, 4, 8]},
                         sweep.seeds(2 if tiny else 3))

`get_grid(arg)` returns override dicts (dotted config key -> value); an
optional module-level `FIXED` dict is added to every run without naming it. The
launcher's `--arg` goes both to `get_grid(arg)` and to the base config
(`configs/ml100k_distill.py:tiny`), so one word shrinks the grid and each run.

Each run gets the workdir ROOT/<name>, the name made from its overrides
(`{"distill.weights.soft": 0, "seed": 1}` -> `soft=0_seed=1`).
"""

import dataclasses
import hashlib
import importlib.util
import itertools
import json
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PREFIX = (sys.executable, "-m", "rec_jax.main")
MAX_NAME_LEN = 80

Overrides = dict[str, Any]


# ---------------------------------------------------------------- grid helpers


def _factors(grids: Sequence[Any], axes: dict[str, Sequence[Any]]) -> list[list[Overrides]]:
    """Positional sub-grids or {key: values} dicts, and keyword axes -> factors."""
    factors = []
    for grid in grids:
        if isinstance(grid, dict):  # {key: values}: each key is its own factor.
            factors.extend([{k: v} for v in values] for k, values in grid.items())
        else:
            factors.append([dict(o) for o in grid])
    factors.extend([{k: v} for v in values] for k, values in axes.items())
    return factors


def _merge(combo: Sequence[Overrides]) -> Overrides:
    return {k: v for overrides in combo for k, v in overrides.items()}


def product(*grids: Any, **axes: Sequence[Any]) -> list[Overrides]:
    """Cartesian product of sub-grids and axes; the first factor varies slowest.

    Dotted keys are not Python identifiers, so pass them as a dict:
    `product({"distill.topk": [5, 10]}, seeds(3))` gives 6 override dicts.

    Args:
      *grids: each a list of override dicts (from `seeds`, `zip_axes`, another
        `product`, or written out) or a dict {dotted key: list of values}.
      **axes: more axes, key -> list of values (e.g. `seed=[0, 1]`).

    Returns:
      One override dict per point of the product.
    """
    return [_merge(combo) for combo in itertools.product(*_factors(grids, axes))]


def zip_axes(*grids: Any, **axes: Sequence[Any]) -> list[Overrides]:
    """Zips axes of equal length: the i-th point takes the i-th value of each.

    `zip_axes({"model.mf.embed_dim": [8, 16], "model.sasrec.embed_dim": [8, 16]})`
    gives two points, not four. Arguments as in `product`.

    Raises:
      ValueError: if the axes differ in length.
    """
    factors = _factors(grids, axes)
    if len({len(f) for f in factors}) > 1:
        raise ValueError(f"zip_axes needs equal lengths, got {[len(f) for f in factors]}")
    return [_merge(combo) for combo in zip(*factors)]


def seeds(n: int, start: int = 0) -> list[Overrides]:
    """`n` seeds as a grid axis: [{"seed": start}, ..., {"seed": start + n - 1}]."""
    return [{"seed": s} for s in range(start, start + n)]


def is_tiny(arg: str | None) -> bool:
    """True for `tiny`, False for None; any other arg is a typo, so it raises."""
    if arg not in (None, "", "tiny"):
        raise ValueError(f"grid arg must be 'tiny' or absent, got {arg!r}")
    return arg == "tiny"


# ----------------------------------------------------------- names & commands


def _slug(value: Any) -> str:
    """Filesystem-safe text for a key or value (`top:1` -> `top-1`, `a,b` -> `a+b`)."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = repr(value).removesuffix(".0")
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._=+@-]", "-", text.replace(",", "+"))


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Shortest dotted suffix of each key that no other key in `keys` ends with."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            if not any(o != key and (o == cand or o.endswith("." + cand)) for o in keys):
                break
        short[key] = cand
    return short


def _ordered(overrides: Overrides) -> list[str]:
    # The grid author's key order reads best; the seed goes last so that runs
    # that differ only by seed sit next to each other in `ls`.
    return sorted(overrides, key=lambda k: k == "seed")


def _name(overrides: Overrides, full_keys: bool = False) -> str:
    keys = _ordered(overrides)
    short = {k: k for k in keys} if full_keys else short_keys(keys)
    parts = [f"{_slug(short[k])}={_slug(overrides[k])}" for k in keys]
    # The base config's own point (nothing but a seed overridden) says so.
    return "_".join(parts if set(overrides) - {"seed"} else ["base", *parts])


def _hash(overrides: Overrides) -> str:
    canonical = json.dumps(overrides, sort_keys=True, default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:8]


def run_names(grid: Sequence[Overrides]) -> list[str]:
    """One short, filesystem-safe, stable, unique name per override dict.

    A name depends on the run's own overrides only (so editing one point of a
    grid does not rename the others), except where two runs would collide: those
    get full dotted keys and, if that is not enough or the name is too long, a
    hash of their overrides.

    Raises:
      ValueError: if the grid holds the same override dict twice.
    """
    canon = [json.dumps(o, sort_keys=True, default=str) for o in grid]
    if len(set(canon)) != len(canon):
        raise ValueError("grid holds the same overrides twice")
    names = [_name(o) for o in grid]
    for attempt in ("full_keys", "hash"):
        clashes = {n for n in names if names.count(n) > 1}
        for i, o in enumerate(grid):
            if names[i] in clashes or len(names[i]) > MAX_NAME_LEN:
                if attempt == "full_keys" and names[i] in clashes:
                    names[i] = _name(o, full_keys=True)
                else:
                    names[i] = f"{names[i][: MAX_NAME_LEN - 9]}_{_hash(o)}"
    return names


def _flag_value(value: Any) -> str:
    """A value as config_flags parses it back (`--config.a.b=<this>`)."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


# ------------------------------------------------------------------- expanding


@dataclasses.dataclass(frozen=True)
class Run:
    """One grid point: its name, overrides, workdir and rec_jax.main flags."""

    name: str
    overrides: Overrides
    workdir: str
    args: tuple[str, ...]  # Flags to rec_jax.main, without the python prefix.

    def command(self, prefix: Sequence[str] = DEFAULT_PREFIX) -> list[str]:
        """The full command line: `prefix` (python -m rec_jax.main) then the flags."""
        return [*prefix, *self.args]


def load_grid(path: str | os.PathLike) -> ModuleType:
    """Imports a grid file given as a path or as a name in `experiments/`."""
    path = Path(path)
    for cand in (path, REPO_ROOT / path, REPO_ROOT / "experiments" / f"{path}.py"):
        if cand.is_file():
            spec = importlib.util.spec_from_file_location(f"grid_{cand.stem}", cand)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise FileNotFoundError(f"no grid file {path}")


def expand(
    grid: ModuleType, root: str, arg: str | None = None, extra_args: Sequence[str] = ()
) -> tuple[str, list[Run]]:
    """Expands a grid module into runs under `root`.

    Returns:
      (config, runs): the config flag value (`BASE_CONFIG[:arg]`) and the runs.
    """
    config = grid.BASE_CONFIG + (f":{arg}" if arg else "")
    points = grid.get_grid(arg)
    # FIXED: overrides every run shares (e.g. a teacher cache); they are part
    # of each command but not of the run names.
    fixed = dict(getattr(grid, "FIXED", {}))
    runs = []
    for name, overrides in zip(run_names(points), points):
        # String join, not Path: the root may be a bucket (gs://...) on TPU VMs.
        workdir = f"{root.rstrip('/')}/{name}"
        args = (
            f"--config={config}",
            f"--workdir={workdir}",
            *(f"--config.{k}={_flag_value(v)}" for k, v in {**fixed, **overrides}.items()),
            *extra_args,
        )
        runs.append(Run(name, dict(overrides), workdir, args))
    return config, runs


def select(runs: Sequence[Run], only: str | None) -> list[Run]:
    """The runs whose name contains `only` (all of them when `only` is None)."""
    return [r for r in runs if only is None or only in r.name]
