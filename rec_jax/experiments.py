"""Ablation grids: expand a grid file, launch its runs, aggregate the results.

A grid is data (in the spirit of big_vision sweeps). `experiments/<name>.py`:

  from rec_jax import experiments as ex

  BASE_CONFIG = "configs/ml100k_distill.py"

  def get_grid(arg=None):
    tiny = ex.is_tiny(arg)
    return ex.product({"distill.temperature": [1, 4] if tiny else [1, 2, 4, 8]},
                      ex.seeds(2 if tiny else 3))

`get_grid(arg)` returns override dicts (dotted config key -> value); an
optional module-level `FIXED` dict is added to every run without naming it. The
launcher's `--arg` goes both to `get_grid(arg)` and to the base config
(`configs/ml100k_distill.py:tiny`), so one word shrinks the grid and each run.

  python -m rec_jax.experiments run experiments/temperature.py --root=/tmp/rj/temperature [--arg=tiny]
  python -m rec_jax.experiments run experiments/temperature.py --root=gs://bucket/temperature \
      --emit=tpu_vm --out=temperature_tpu.sh [--no_coordinator]
  python -m rec_jax.experiments report /tmp/rj/temperature [--metric ndcg@10 auc] [--split test]

Each run gets the workdir ROOT/<name>, the name made from its overrides
(`{"distill.weights.soft": 0, "seed": 1}` -> `soft=0_seed=1`). A run is done
when its workdir holds `COMPLETE` (the main job writes it last); the launcher
skips those and reruns the others with the same command, which makes the main
job resume. Anything after `--` on the `run` command line is appended to every
run's command (e.g. `-- --stage=student`).
"""

import argparse
import csv
import dataclasses
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PREFIX = (sys.executable, "-m", "rec_jax.main")
COMPLETE = "COMPLETE"
MAX_NAME_LEN = 80
DEFAULT_METRICS = (
    "ndcg@10",
    "recall@10",
    "hr@10",
    "mrr@10",
    "tail/ndcg@10",
    "auc",
    "score_ms_per_user",
)
EMBED_KEY = re.compile(r"^model\.([^.]+)\.embed_dim$")

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


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
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
    short = {k: k for k in keys} if full_keys else _short_keys(keys)
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


@dataclasses.dataclass(frozen=True)
class Run:
    """One grid point: its name, overrides, workdir and rec_jax.main flags."""

    name: str
    overrides: Overrides
    workdir: str
    args: tuple[str, ...]  # Flags to rec_jax.main, without the python prefix.

    def command(self, prefix: Sequence[str] = DEFAULT_PREFIX) -> list[str]:
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


# ------------------------------------------------------------------- launching


def launch(
    runs: Sequence[Run], prefix: Sequence[str] = DEFAULT_PREFIX, echo: Callable[[str], None] = print
) -> list[tuple[Run, str]]:
    """Runs each unfinished run in turn, in its own process.

    A subprocess per run means a crash, OOM or `sys.exit` in one run cannot take
    the launcher (and the rest of the grid) down with it.

    Returns:
      (run, reason) for each run that failed; its log is `workdir/launcher.log`.
    """
    failures = []
    for i, run in enumerate(runs, 1):
        workdir, tag = Path(run.workdir), f"[{i}/{len(runs)}] {run.name}"
        if (workdir / COMPLETE).exists():
            echo(f"{tag}: complete, skipped")
            continue
        state = "rerun (no COMPLETE), resumes" if workdir.exists() else "start"
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "launcher.log"
        echo(f"{tag}: {state}; log {log_path}")
        command, start = run.command(prefix), time.time()
        with open(log_path, "a") as log:  # Append: earlier attempts stay readable.
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
            log.flush()
            # cwd = repo root, where `configs/...` paths and `-m rec_jax.main` resolve.
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
            try:
                rc = proc.wait()
            except KeyboardInterrupt:
                # The run got the same Ctrl-C from the terminal: let it save its
                # checkpoint and exit (subprocess.call would kill it mid-save).
                proc.wait()
                raise
        reason = (
            f"exit code {rc}"
            if rc != 0
            else None
            if (workdir / COMPLETE).exists()
            else f"exited 0 without writing {COMPLETE}"
        )
        if reason:
            failures.append((run, reason))
        echo(f"{tag}: {'FAILED, ' + reason if reason else 'done'} in {time.time() - start:.1f}s")
    return failures


def _write_grid_json(
    root: Path,
    grid_path: str,
    config: str,
    arg: str | None,
    runs: Sequence[Run],
    prefix: Sequence[str],
) -> None:
    """Writes ROOT/grid.json; refuses to mix two different grids in one root."""
    path = root / "grid.json"
    old = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    # A tiny and a full grid share run names; mixing them in one root would make
    # the full grid skip the tiny runs as COMPLETE.
    if old.get("config", config) != config:
        raise SystemExit(
            f"{root} already holds runs of {old['config']}, not {config}; use another --root."
        )
    runs_json = {
        r.name: {"overrides": r.overrides, "workdir": r.name, "command": r.command(prefix)}
        for r in runs
    }
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "grid": str(grid_path),
                "base_config": config.split(":")[0],
                "arg": arg,
                "config": config,
                "runs": {**old["runs"], **runs_json},  # Keep other grids' runs.
            },
            indent=2,
            default=str,
        )
    )


def run_grid(
    grid_path: str,
    root: str,
    arg: str | None = None,
    *,
    dry_run: bool = False,
    only: str | None = None,
    prefix: Sequence[str] = DEFAULT_PREFIX,
    extra_args: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> int:
    """Expands a grid and runs it locally (the `run` command).

    Args:
      grid_path: the grid file (or its name in `experiments/`).
      root: directory that receives one workdir per run and `grid.json`.
      arg: grid/config argument, e.g. `tiny`.
      dry_run: print the commands and run nothing.
      only: run only the runs whose name contains this substring.
      prefix: the command before the flags; tests put a fake main here.
      extra_args: flags appended to every run's command.
      echo: where progress lines go.

    Returns:
      The process exit code: 0 when every selected run is complete, else 1.
    """
    config, runs = expand(load_grid(grid_path), str(Path(root).resolve()), arg, extra_args)
    selected = [r for r in runs if only is None or only in r.name]
    if dry_run:
        for r in selected:
            echo(shlex.join(r.command(prefix)))
        return 0
    _write_grid_json(Path(root).resolve(), grid_path, config, arg, runs, prefix)
    failures = launch(selected, prefix, echo)
    echo(f"{len(selected) - len(failures)}/{len(selected)} runs complete under {root}")
    for run, reason in failures:
        echo(f"FAILED {run.name}: {reason}; log {run.workdir}/launcher.log")
    return 1 if failures else 0


_TPU_HEADER = """\
#!/usr/bin/env bash
# rec_jax grid {grid} ({n} runs, config {config}) on a multi-host Cloud TPU VM.
# Generated by `python -m rec_jax.experiments run ... --emit=tpu_vm`; edit freely.
#
# Each gcloud line runs ONE grid point on ALL workers at once (--worker=all):
# every host starts the same rec_jax.main and they join one JAX job
# {dist_note}.
# Runs go one after another; a failed run is recorded, the next one starts, and
# the failures are listed at the end (exit 1). Rerunning the script resumes
# unfinished runs: the main job reuses whatever its workdir holds. Workdirs must
# be on storage every worker sees (a bucket or a shared disk).
#
# Environment:
#   TPU_NAME, ZONE       the TPU VM (required)
#   PROJECT              gcloud project (default: gcloud's current one)
#   REPO_DIR             the rec_jax checkout on every worker (default: rec_jax)
#   PYTHON               python on the workers (default: python3)
"""
_TPU_COORDINATOR = """\
#   COORDINATOR_ADDRESS  host:port of process 0 (default: worker 0's IP, port 8476)
#   NUM_PROCESSES        number of hosts (default: the TPU VM's worker count)
# --worker=all sends every host the same command, so each host reads its own
# process id from the TPU metadata server (agent-worker-number) when it runs.
"""
_TPU_SETUP = """\
set -uo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REPO_DIR="${REPO_DIR:-rec_jax}"
PYTHON="${PYTHON:-python3}"
GCLOUD_FLAGS=(--zone "$ZONE" ${PROJECT:+--project "$PROJECT"})
FAILED=()
"""
_TPU_DISCOVER = """\
if [[ -z "${COORDINATOR_ADDRESS:-}" || -z "${NUM_PROCESSES:-}" ]]; then
  read -ra WORKER_IPS <<< "$(gcloud compute tpus tpu-vm describe "$TPU_NAME" \\
      "${GCLOUD_FLAGS[@]}" --format='value(networkEndpoints[].ipAddress)' | tr ',;' '  ')"
  COORDINATOR_ADDRESS="${COORDINATOR_ADDRESS:-${WORKER_IPS[0]}:8476}"
  NUM_PROCESSES="${NUM_PROCESSES:-${#WORKER_IPS[@]}}"
fi
# Single quotes: expanded on each worker, not here.
PROCESS_ID='$(curl -s -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number)'
"""
_TPU_FOOTER = """
if (( ${#FAILED[@]} )); then
  echo "failed runs: ${FAILED[*]}" >&2
  exit 1
fi
echo "all runs done"
"""


def emit_tpu_vm(runs: Sequence[Run], grid_name: str, config: str, coordinator: bool = True) -> str:
    """A bash script with one `gcloud ... tpu-vm ssh --worker=all` line per run.

    Args:
      runs: the expanded grid.
      grid_name: shown in the header.
      config: the config flag value, shown in the header.
      coordinator: pass --coordinator_address/--num_processes/--process_id
        explicitly; without them rec_jax.main must let jax.distributed.initialize
        detect the TPU VM's topology itself.
    """
    dist_note = (
        "through explicit --coordinator_address/--num_processes/--process_id"
        if coordinator
        else "(--distributed: jax.distributed.initialize() auto-detects TPU VMs)"
    )
    parts = [_TPU_HEADER.format(grid=grid_name, n=len(runs), config=config, dist_note=dist_note)]
    parts += [_TPU_COORDINATOR, _TPU_SETUP, _TPU_DISCOVER] if coordinator else [_TPU_SETUP]
    dist = (
        (
            " --coordinator_address=${COORDINATOR_ADDRESS} --num_processes=${NUM_PROCESSES}"
            " --process_id=${PROCESS_ID}"
        )
        if coordinator
        else " --distributed"
    )
    for run in runs:
        remote = shlex.join(run.args)
        # The remote command sits inside double quotes here: escape what bash would
        # expand locally, so the run's own flags reach the worker untouched.
        remote = re.sub(r'([\\"$`])', r"\\\1", remote)
        parts.append(
            f'\n# {run.name}\ngcloud compute tpus tpu-vm ssh "$TPU_NAME" "${{GCLOUD_FLAGS[@]}}" '
            f'--worker=all --command "cd ${{REPO_DIR}} && ${{PYTHON}} -m rec_jax.main '
            f'{remote}{dist}" || FAILED+=({shlex.quote(run.name)})'
        )
    parts.append(_TPU_FOOTER)
    return "".join(parts)


# ----------------------------------------------------------------- aggregation


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
    for part in key.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return repr(value).removesuffix(".0")
    return str(value)


def _run_values(runs: list[RunResult]) -> tuple[list[str], list[dict[str, Any]]]:
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
        if key not in ("workdir",) and len({_canon(f.get(key)) for f in unlisted}) > 1:
            keys[key] = None
    if "seed" not in keys:
        keys["seed"] = None
    values = []
    for r in runs:
        ov = r.overrides or {}
        values.append({k: ov[k] if k in ov else _lookup(r.config, k) for k in keys})
    return list(keys), values


def _compound_axes(keys: list[str], values: list[dict[str, Any]]) -> list[list[str]]:
    """Swept keys (not seed), zipped keys merged: they are one axis, not several."""
    by_partition: dict[tuple, list[str]] = {}
    for key in keys:
        column = [_canon(v[key]) for v in values]
        if key == "seed" or len(set(column)) < 2:
            continue
        partition = tuple(column.index(c) for c in column)
        by_partition.setdefault(partition, []).append(key)
    return list(by_partition.values())


def _axis_label(axis: list[str], short: dict[str, str]) -> str:
    lasts = {k.split(".")[-1] for k in axis}
    return lasts.pop() if len(axis) > 1 and len(lasts) == 1 else "/".join(short[k] for k in axis)


def _stats(xs: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for a single value)."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def _fmt(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 1000 else f"{x:.1f}"


def _metric(record: dict[str, float], metric: str, split: str) -> float | None:
    # "ndcg@10" means the split's metric; "num_params" an info value; an explicit
    # "valid/ndcg@10" is taken as written.
    return record.get(f"{split}/{metric}", record.get(metric))


def report(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    metrics: Sequence[str] | None = None,
    split: str = "test",
) -> str | None:
    """Aggregates a grid's results into summary.csv, summary.md and plots/*.png.

    Args:
      root: directory searched recursively for results.json.
      out: output directory (default: `root`).
      metrics: table columns and plotted metrics; default: DEFAULT_METRICS that
        are present (table), ndcg@10 and auc (plots).
      split: which split the table and plots show ("test" or "valid").

    Returns:
      The Markdown table, or None when no results were found.
    """
    root = Path(root)
    out = Path(out or root)
    runs, pending = collect(root)
    if not runs:
        print(f"no results.json under {root}")
        return None
    keys, values = _run_values(runs)
    axes = _compound_axes(keys, values)
    short = _short_keys(keys)
    rows = [(i, model, rec) for i, r in enumerate(runs) for model, rec in r.models.items()]
    model_order = list(dict.fromkeys(model for _, model, _ in rows))

    # One row per run x model: every override and every number we have.
    out.mkdir(parents=True, exist_ok=True)
    metric_keys = sorted({k for _, _, rec in rows for k in rec})
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "model", *keys, *metric_keys])
        for i, model, rec in rows:
            writer.writerow(
                [
                    runs[i].name,
                    model,
                    *("" if values[i][k] is None else _show(values[i][k]) for k in keys),
                    *(rec.get(k, "") for k in metric_keys),
                ]
            )

    # Markdown: rows grouped by the swept values (seed aside) and the model.
    present = lambda m: any(_metric(rec, m, split) is not None for _, _, rec in rows)
    columns = [m for m in (metrics or DEFAULT_METRICS) if metrics or present(m)]
    combo = lambda i: tuple(_canon(values[i][axis[0]]) for axis in axes)
    groups: dict[tuple, list[int]] = {}
    for i, model, _ in sorted(rows, key=lambda t: model_order.index(t[1])):
        groups.setdefault((model, combo(i)), []).append(i)
    header = [*(_axis_label(a, short) for a in axes), "model", "n", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, _), members in groups.items():
        cells = []
        for m in columns:
            xs = [x for i in members if (x := _metric(runs[i].models[model], m, split)) is not None]
            if not xs:
                cells.append("")
                continue
            mean, std = _stats(xs)
            cells.append(
                _fmt(mean)
                + ("" if std is None else f" ± {_fmt(std)}")
                + ("" if len(xs) == len(members) else f" (n={len(xs)})")
            )
        first = values[members[0]]
        lines.append(
            "| "
            + " | ".join([*(_show(first[a[0]]) for a in axes), model, str(len(members)), *cells])
            + " |"
        )
    table = "\n".join(lines)
    fixed = [
        f"{short[k]}={_show(values[0][k])}"
        for k in keys
        if k != "seed" and not any(k in a for a in axes) and values[0][k] is not None
    ]
    md = [
        f"# Summary of {root}",
        "",
        f"{len(runs)} runs with results; {split} split; cells are mean ± sample std "
        f"(ddof=1) over runs that differ only by seed, n = number of such runs.",
        "",
    ]
    if fixed:
        md += ["Fixed overrides: " + ", ".join(fixed), ""]
    if pending:
        md += [f"Runs without results ({len(pending)}): " + ", ".join(pending), ""]
    gains = _kd_gains(runs, axes, values, split)
    (out / "summary.md").write_text("\n".join(md + [table, ""] + ([gains, ""] if gains else [])))

    plot_metrics = [m for m in (metrics or ("ndcg@10", "auc")) if present(m)]
    _plots(out / "plots", values, axes, short, rows, plot_metrics, split)
    print(table)
    if gains:
        print("\n" + gains)
    return table


def _kd_gains(runs, axes, values, split: str, metric: str = "ndcg@10") -> str | None:
    """Markdown: relative gain of `<m>_kd` over `<m>` in the same run, mean ± std.

    Each run pairs its own student with and without distillation (same seed,
    same split), so the gain is measured within a run and then averaged.
    """
    combo = lambda i: tuple(_canon(values[i][axis[0]]) for axis in axes)
    groups: dict[tuple, list[float]] = {}
    for i, run in enumerate(runs):
        for model, rec in run.models.items():
            if not model.endswith("_kd") or model[:-3] not in run.models:
                continue
            kd = _metric(rec, metric, split)
            base = _metric(run.models[model[:-3]], metric, split)
            if kd is None or not base:
                continue
            groups.setdefault((combo(i), model[:-3]), []).append(kd / base - 1.0)
    if not groups:
        return None
    lines = [f"Relative {split} {metric} gain of distillation (<model>_kd vs <model>, same run):",
             "", "| " + " | ".join([*("/".join(a) for a in axes), "student", "n", "gain"]) + " |",
             "|" + "---|" * (len(axes) + 3)]
    for (key, student), xs in groups.items():
        mean, std = _stats(xs)
        cell = f"{100 * mean:+.1f}%" + ("" if std is None else f" ± {100 * std:.1f}%")
        lines.append("| " + " | ".join([*key, student, str(len(xs)), cell]) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------- plots


def _plots(
    plot_dir: Path,
    values: list[dict[str, Any]],
    axes: list[list[str]],
    short: dict[str, str],
    rows: list,
    metrics: list[str],
    split: str,
) -> list[Path]:
    """Metric vs each swept axis; quality vs serving cost when embed_dim is swept."""
    import matplotlib

    matplotlib.use("Agg")  # No display on servers and in tests.
    import matplotlib.pyplot as plt

    def figures():  # Lazily, so only one figure is open at a time.
        for axis in axes:
            others = [a for a in axes if a is not axis]
            for metric in metrics:
                yield (
                    f"{metric}_vs_{_axis_label(axis, short)}",
                    _axis_figure(plt, axis, others, values, short, rows, metric, split),
                )
        embed_axes = [a for a in axes if any(EMBED_KEY.match(k) for k in a)]
        if embed_axes:
            quality = metrics[0] if metrics else "ndcg@10"
            yield (
                f"{quality}_vs_score_ms_per_user",
                _cost_figure(plt, embed_axes[0], axes, values, rows, quality, split),
            )

    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures():
        if fig is not None:
            written.append(plot_dir / re.sub(r"[^A-Za-z0-9._=@+-]", "_", f"{name}.png"))
            fig.savefig(written[-1], dpi=110, bbox_inches="tight")
            plt.close(fig)
    return written


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_x_if_spread(ax, xs: Sequence[float]) -> None:
    # Sizes, temperatures, fractions and latencies are swept on log-like scales.
    if xs and min(xs) > 0 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log")
        ax.set_xticks([], minor=True)


def _axis_figure(plt, axis, others, values, short, rows, metric, split):
    """Metric vs one swept axis with error bars = std over seeds (None if no data).

    One curve per model; when other axes vary too, one panel per model with a
    curve per setting of the other axes.
    """
    label, lead = _axis_label(axis, short), axis[0]
    raw: dict[str, Any] = {}  # canonical x -> x, in grid order.
    curves: dict[str, dict[tuple, dict[str, list[float]]]] = {}  # model -> rest -> x -> ys
    for i, model, rec in rows:
        x = _canon(values[i][lead])
        raw.setdefault(x, values[i][lead])
        if (y := _metric(rec, metric, split)) is not None:
            rest = tuple(_show(values[i][o[0]]) for o in others)
            curves.setdefault(model, {}).setdefault(rest, {}).setdefault(x, []).append(y)
    # A curve needs two x values. One-factor-at-a-time grids (kd_terms) leave
    # lone points for the other factors' settings; the table shows those.
    if any(len(points) > 1 for c in curves.values() for points in c.values()):
        curves = {m: {r: p for r, p in c.items() if len(p) > 1} for m, c in curves.items()}
        curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    numeric = _numeric(list(raw.values()))
    order = sorted(raw, key=raw.get) if numeric else list(raw)
    pos = {x: float(raw[x]) if numeric else float(k) for k, x in enumerate(order)}
    panels = max(len(c) for c in curves.values()) > 1
    n = len(curves) if panels else 1
    cols = min(n, 3)
    nrows = (n + cols - 1) // cols
    fig, axs = plt.subplots(
        nrows,
        cols,
        squeeze=False,
        sharex=True,
        figsize=(4.5 * cols + (0 if panels else 1.5), 3.3 * nrows),
    )
    # Panels share one legend: a setting of the other axes has one colour throughout.
    colours = {
        rest: f"C{k % 10}"
        for k, rest in enumerate(dict.fromkeys(r for c in curves.values() for r in c))
    }
    legend = {}
    for k, (model, by_rest) in enumerate(curves.items()):
        ax = axs.flat[k if panels else 0]
        for rest, points in by_rest.items():
            xs = sorted(points, key=pos.get)
            stats = [_stats(points[x]) for x in xs]
            name = ", ".join(f"{_axis_label(o, short)}={v}" for o, v in zip(others, rest))
            legend[name if panels else model] = ax.errorbar(
                [pos[x] for x in xs],
                [s[0] for s in stats],
                yerr=[s[1] or 0.0 for s in stats],
                marker="o",
                capsize=3,
                color=colours[rest] if panels else f"C{k % 10}",
            )
        if panels:
            ax.set_title(model, fontsize="medium")
    for ax in axs.flat[n:]:
        ax.set_visible(False)
    for ax in axs.flat[:n]:
        if numeric:
            _log_x_if_spread(ax, list(pos.values()))
        ax.set_xticks([pos[x] for x in order], [_show(raw[x]) for x in order])
        ax.set(xlabel=label, ylabel=f"{split} {metric}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} vs {label} (mean ± std over seeds)")
    fig.tight_layout()
    # Right of the panels, however long the labels: savefig's tight bbox grows to fit.
    fig.legend(
        list(legend.values()),
        list(legend),
        loc="upper left",
        bbox_to_anchor=(1, 0.95),
        fontsize="x-small",
    )
    return fig


def _cost_figure(plt, axis, axes, values, rows, quality, split):
    """Quality vs time to score one user's catalog, a curve per model over sizes.

    Smaller students are the point of distillation: this shows what each size
    buys and costs. Each point is labelled with the model's own size key
    (mf_kd -> model.mf.embed_dim).
    """
    points: dict[str, dict[tuple, list[tuple[float, float]]]] = {}
    for i, model, rec in rows:
        y, x = _metric(rec, quality, split), rec.get("score_ms_per_user")
        if x is not None and y is not None:
            own = [k for k in axis if model.startswith(EMBED_KEY.match(k).group(1))] or axis
            key = (_show(values[i][own[0]]), tuple(_canon(values[i][a[0]]) for a in axes))
            points.setdefault(model, {}).setdefault(key, []).append((x, y))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    all_x = []
    for model, groups in points.items():
        stats = sorted(
            (
                (_stats([p[0] for p in ps]), _stats([p[1] for p in ps]), dim)
                for (dim, _), ps in groups.items()
            ),
            key=lambda s: s[0][0],
        )
        all_x += [s[0][0] for s in stats]
        ax.errorbar(
            [s[0][0] for s in stats],
            [s[1][0] for s in stats],
            xerr=[s[0][1] or 0.0 for s in stats],
            yerr=[s[1][1] or 0.0 for s in stats],
            marker="o",
            capsize=3,
            label=model,
        )
        for (x, _), (y, _), dim in stats:
            ax.annotate(
                f"d={dim}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize="x-small"
            )
    _log_x_if_spread(ax, all_x)
    ax.set(
        xlabel="score_ms_per_user (ms to score one user's full catalog)",
        ylabel=f"{split} {quality}",
        title=f"{quality} vs serving cost (mean ± std over seeds)",
    )
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.3)
    return fig


# ------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rec_jax.experiments {run,report} ...`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="python -m rec_jax.experiments", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="launch a grid (locally, or emit a TPU VM script)")
    run.add_argument("grid", help="grid file, e.g. experiments/kd_terms.py (or kd_terms)")
    run.add_argument("--root", required=True, help="one workdir per run goes under here")
    run.add_argument("--arg", default=None, help="grid and config argument, e.g. tiny")
    run.add_argument("--dry_run", action="store_true", help="print the commands only")
    run.add_argument("--emit", choices=["tpu_vm"], help="write a launch script, run nothing")
    run.add_argument("--out", help="the script --emit writes (default: <grid>_tpu_vm.sh)")
    run.add_argument(
        "--no_coordinator",
        action="store_true",
        help="emit without --coordinator_address/--num_processes/--process_id"
        " (jax.distributed auto-detects TPU VMs)",
    )
    run.add_argument("--python", default=sys.executable, help="python that runs rec_jax.main")
    run.add_argument("--only", help="run only runs whose name contains this")
    rep = sub.add_parser("report", help="aggregate results.json files under a directory")
    rep.add_argument("root")
    rep.add_argument("--out", help="output directory (default: root)")
    rep.add_argument(
        "--metric",
        action="extend",
        nargs="+",
        dest="metrics",
        help="metrics for the table and plots, e.g. ndcg@10 tail/ndcg@10",
    )
    rep.add_argument("--split", default="test", choices=["test", "valid"])
    args = parser.parse_args(argv)

    if args.command == "report":
        return 0 if report(args.root, args.out, args.metrics, args.split) is not None else 1
    if args.emit:
        grid = load_grid(args.grid)
        config, runs = expand(grid, args.root, args.arg, extra)
        runs = [r for r in runs if args.only is None or args.only in r.name]
        out = Path(args.out or f"{Path(args.grid).stem}_tpu_vm.sh")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(emit_tpu_vm(runs, Path(args.grid).stem, config, not args.no_coordinator))
        out.chmod(0o755)
        print(f"wrote {out} ({len(runs)} runs)")
        return 0
    return run_grid(
        args.grid,
        args.root,
        args.arg,
        dry_run=args.dry_run,
        only=args.only,
        prefix=(args.python, "-m", "rec_jax.main"),
        extra_args=extra,
    )


if __name__ == "__main__":
    sys.exit(main())
