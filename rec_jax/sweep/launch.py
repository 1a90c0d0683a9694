"""Runs a grid's runs locally, one after another, each in its own process.

A run is done when its workdir holds `COMPLETE` (the main job writes it last);
the launcher skips those and reruns the others with the same command, which
makes the main job resume. ROOT/grid.json records every run's overrides and
command, for the report.
"""

import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence

from rec_jax.sweep.grid import DEFAULT_PREFIX, REPO_ROOT, Run, expand, load_grid, select

COMPLETE = "COMPLETE"


def run_each(
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
    selected = select(runs, only)
    if dry_run:
        for r in selected:
            echo(shlex.join(r.command(prefix)))
        return 0
    _write_grid_json(Path(root).resolve(), grid_path, config, arg, runs, prefix)
    failures = run_each(selected, prefix, echo)
    echo(f"{len(selected) - len(failures)}/{len(selected)} runs complete under {root}")
    for run, reason in failures:
        echo(f"FAILED {run.name}: {reason}; log {run.workdir}/launcher.log")
    return 1 if failures else 0
