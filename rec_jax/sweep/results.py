"""The runs under a root as records, and what the report reads from them.

`collect` finds every run's results.json (with its run.json, and the grid.json
that launched it); `run_values` and `compound_axes` say which config keys the
runs sweep and each run's value of them. The table (report.py) and the plots
(plots.py) share the rest: a metric's value, mean ± std, how values and axes
are shown.
"""

import dataclasses
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from rec_jax.sweep.grid import Overrides


@dataclasses.dataclass
class RunResult:
    """One finished (or partial) run found under the report root."""

    name: str  # Workdir relative to the report root.
    workdir: Path
    overrides: Overrides | None  # From grid.json; None when not listed.
    config: dict[str, Any] | None  # From run.json.
    models: dict[str, dict[str, float]]  # model -> {"test/ndcg@10": ., "num_params": .}
    order: tuple  # Grid order first, then path.


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: leaf value}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _flat_metrics(entry: dict[str, Any]) -> dict[str, float]:
    """{"valid": {m: v}, "info": {k: v}} -> {"valid/m": v, "k": v}, numbers only."""
    out = {}
    for section, values in entry.items():
        items = values.items() if isinstance(values, dict) else [(None, values)]
        for metric, value in items:
            key = (
                section
                if metric is None
                else metric
                if section == "info"
                else f"{section}/{metric}"
            )
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = float(value)
    return out


def collect(root: str | os.PathLike) -> tuple[list[RunResult], list[str]]:
    """Finds every results.json under `root`.

    Returns:
      (results in grid order, names of runs listed in a grid.json without results).
    """
    root = Path(root).resolve()
    listed = {}  # workdir -> (order, overrides, name)
    for g_index, grid_json in enumerate(sorted(root.rglob("grid.json"))):
        grid = json.loads(grid_json.read_text())
        # The base config is a pseudo-override: a report over several grids must
        # not pool a teacher-config run with a distill-config run.
        base = {"config": grid["config"]} if "config" in grid else {}
        for r_index, (name, spec) in enumerate(grid["runs"].items()):
            workdir = (grid_json.parent / spec.get("workdir", name)).resolve()
            listed[workdir] = (
                (g_index, r_index),
                {**base, **spec["overrides"]},
                str(workdir.relative_to(root)) if workdir.is_relative_to(root) else name,
            )
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "results.json" not in filenames:
            continue
        dirnames.clear()  # A run's own subdirectories are not runs.
        workdir = Path(dirpath).resolve()
        try:
            results = json.loads((workdir / "results.json").read_text())
            run_json = workdir / "run.json"
            config = json.loads(run_json.read_text()).get("config") if run_json.exists() else None
        except (json.JSONDecodeError, OSError) as e:  # Half-written by a live run.
            print(f"skipping {workdir}: {e}", file=sys.stderr)
            continue
        order, overrides, _ = listed.get(workdir, ((1 << 30, 0), None, None))
        models = {m: _flat_metrics(e) for m, e in results.items() if isinstance(e, dict)}
        found.append(
            RunResult(
                str(workdir.relative_to(root)),
                workdir,
                overrides,
                config,
                models,
                (*order, str(workdir)),
            )
        )
    found.sort(key=lambda r: r.order)
    done = {r.workdir for r in found}
    pending = [name for w, (_, _, name) in listed.items() if w not in done]
    return found, pending


def _lookup(config: dict[str, Any] | None, key: str) -> Any:
    """The value at a dotted key of a nested config, or None when it is absent."""
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def canon(value: Any) -> str:
    """A value as hashable text, to group and compare runs by it."""
    return json.dumps(value, sort_keys=True, default=str)


def show(value: Any) -> str:
    """A value as the table and plots print it (`-` for a key the run lacks)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return repr(value).removesuffix(".0")
    return str(value)


def run_values(runs: list[RunResult]) -> tuple[list[str], list[dict[str, Any]]]:
    """Each run's value for every key that any run overrides.

    Keys come from grid.json; for runs no grid.json lists, they are the config
    keys whose values differ between those runs (read from run.json). A key a
    run does not override takes its value from that run's run.json (e.g. the
    base config's weight in the "all terms on" point of an ablation).
    """
    keys: dict[str, None] = {}
    for r in runs:
        keys.update(dict.fromkeys(r.overrides or {}))
    unlisted = [_flatten(r.config) for r in runs if r.overrides is None and r.config]
    for key in dict.fromkeys(k for flat in unlisted for k in flat):
        if key not in ("workdir",) and len({canon(f.get(key)) for f in unlisted}) > 1:
            keys[key] = None
    if "seed" not in keys:
        keys["seed"] = None
    values = []
    for r in runs:
        ov = r.overrides or {}
        values.append({k: ov[k] if k in ov else _lookup(r.config, k) for k in keys})
    return list(keys), values


def compound_axes(keys: list[str], values: list[dict[str, Any]]) -> list[list[str]]:
    """Swept keys (not seed), zipped keys merged: they are one axis, not several."""
    by_partition: dict[tuple, list[str]] = {}
    for key in keys:
        column = [canon(v[key]) for v in values]
        if key == "seed" or len(set(column)) < 2:
            continue
        partition = tuple(column.index(c) for c in column)
        by_partition.setdefault(partition, []).append(key)
    return list(by_partition.values())


def setting(values: dict[str, Any], axes: list[list[str]]) -> tuple[str, ...]:
    """A run's point on the swept axes (from its `run_values`); seeds share it."""
    return tuple(canon(values[axis[0]]) for axis in axes)


def axis_label(axis: list[str], short: dict[str, str]) -> str:
    """An axis' name: the shared last key component of zipped keys, else the short keys."""
    lasts = {k.split(".")[-1] for k in axis}
    return lasts.pop() if len(axis) > 1 and len(lasts) == 1 else "/".join(short[k] for k in axis)


def mean_std(xs: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for a single value)."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def metric_value(record: dict[str, float], metric: str, split: str) -> float | None:
    """A model's value of `metric` on `split`, or None when the run lacks it."""
    # "ndcg@10" means the split's metric; "num_params" an info value; an explicit
    # "valid/ndcg@10" is taken as written.
    return record.get(f"{split}/{metric}", record.get(metric))
