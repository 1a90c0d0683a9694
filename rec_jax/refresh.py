r"""Periodic refresh: replay the data through time and compare update policies.

    python -m rec_jax.main --config=configs/ml100k_refresh.py --workdir=workdir/refresh

The interactions are cut at ``config.data.window_edges``; window ``w`` trains
on everything before edge ``w`` and is scored on the period up to edge
``w + 1`` (split ``window``: full ranking, each user's earlier items
excluded, users without history skipped). Three policies per window:

* ``stale``: the models of window 0, never updated (their checkpoints are
  evaluated on each later window; only the inputs, e.g. histories, are new);
* ``refresh``: the teacher fine-tuned from the previous window's teacher and
  the student re-distilled from the previous window's student (warm starts,
  ``train.init_from``), with the shorter budget of ``config.refresh``;
* ``scratch``: everything retrained from a random init.

Window 0 is the same for all three (trained once, in ``scratch/window_0``).
Every (policy, window) is an ordinary job in ``<workdir>/<policy>/window_<w>``,
so a killed refresh resumes where it stopped. The report (``refresh.md``)
gives NDCG@10 per window and policy and the training seconds each spent.

``config.data.extra_interactions`` appends an interactions log (what
``POST /interactions`` of the service writes) to the data before cutting, so
a window edge after the log's last timestamp makes it the next window.
"""

from __future__ import annotations

import json
import os
import shutil

from rec_jax import console, errors
from rec_jax import run as run_lib
from rec_jax.eval import report as report_lib
from rec_jax.eval import significance
from rec_jax.spec import ModelName

POLICIES = ("stale", "refresh", "scratch")


def _windows(config) -> int:
    edges = [e for e in config.data.window_edges.split(",") if e.strip()]
    return len(edges) - 1


def _check(config) -> list[str]:
    names = run_lib.model_names(config)
    families = [ModelName.parse(n).family for n in names]
    repeated = {f for f in families if families.count(f) > 1}
    if repeated:
        raise errors.ConfigError(
            f"refresh: models {names} share a config section ({sorted(repeated)}); a warm start "
            "reads one params file per section, so run one model per family")
    unknown = [p for p in config.refresh.policies.split(",") if p.strip() not in POLICIES]
    if unknown:
        raise errors.ConfigError(f"config.refresh.policies: unknown {unknown[0]!r} "
                                 f"(use {POLICIES})")
    if config.teacher.cache_dir:
        raise errors.ConfigError("refresh: config.teacher.cache_dir must be '' (each window "
                                 "trains its own teacher)")
    return names


def window_config(config, window: int, policy: str, previous: str | None):
    """The job of one (policy, window): the window's split, and warm starts for `refresh`."""
    c = config.copy_and_resolve_references()
    c.data.split = "window"
    c.data.window = window
    if policy == "refresh" and previous is not None:
        r = config.refresh
        for name in run_lib.model_names(config):
            if name in ("ease", "pop"):  # fitted in closed form / counted: nothing to warm
                continue
            parsed = ModelName.parse(name)
            section = c.teacher if parsed.is_teacher else c.model[parsed.family]
            section.train.init_from = os.path.join(previous, name, "params.msgpack")
            section.train.epochs = r.teacher_epochs if parsed.is_teacher else r.student_epochs
            section.train.steps = 0
            section.train.patience = r.patience
            section.train.min_epochs = 0.0  # a warm start may stop at once
    return c


def _stale_folder(initial: str, folder: str, names: list[str]) -> None:
    """Window-0 checkpoints copied in: the job restores them (finished) and only evaluates."""
    for name in names:
        src = os.path.join(initial, name, "ckpt")
        dst = os.path.join(folder, name, "ckpt")
        if os.path.isdir(src) and not os.path.exists(dst):
            shutil.copytree(src, dst + ".tmp")
            os.replace(dst + ".tmp", dst)


def _spent(results: dict) -> float:
    return float(sum(r.get("info", {}).get("train_seconds", 0.0) for r in results.values()))


def run(config, workdir: str) -> dict:
    names = _check(config)
    policies = [p.strip() for p in config.refresh.policies.split(",") if p.strip()]
    rows = []
    initial = os.path.join(workdir, "scratch", "window_0")
    previous = {p: initial for p in policies}
    for w in range(_windows(config)):
        results = None
        for policy in policies:
            folder = os.path.join(workdir, policy if w else "scratch", f"window_{w}")
            if w and policy == "stale":
                _stale_folder(initial, folder, names)
            if w or results is None:  # (window 0 is one job for every policy)
                console.say(f"=== refresh: window {w}, policy {policy if w else 'all'} "
                            f"({folder})")
                results = run_lib.run(window_config(config, w, policy, previous[policy]), folder)
            previous[policy] = folder
            row = {"window": w, "policy": policy, "seconds": _spent(results) if w else 0.0,
                   "folder": folder}
            row.update({f"{n}/ndcg@10": results[n]["test"]["ndcg@10"] for n in names})
            row["test_users"] = results[names[-1]]["test"].get("users")
            rows.append(row)
    initial_seconds = _spent(report_lib.read_results(initial))
    text = markdown(rows, names, policies, initial_seconds) + paired(rows, names[-1], policies)
    with open(os.path.join(workdir, "refresh.json"), "w") as f:
        json.dump({"rows": rows, "initial_seconds": initial_seconds}, f, indent=1)
    with open(os.path.join(workdir, "refresh.md"), "w") as f:
        f.write(text)
    console.say(text)
    return {"rows": rows}


def markdown(rows: list[dict], names: list[str], policies: list[str],
           initial_seconds: float) -> str:
    """NDCG@10 per window and policy, the seconds spent, and refresh against the others."""
    student = names[-1]
    by = {(r["window"], r["policy"]): r for r in rows}
    windows = sorted({r["window"] for r in rows})
    head = "| window | test users | " + " | ".join(
        f"{p}: {n} NDCG@10" for n in names for p in policies) + " |"
    lines = [f"Test NDCG@10 on each window (full ranking, earlier items excluded); window 0 "
             f"is shared (trained once, {initial_seconds:.0f} s).", "", head,
             "|" + "---|" * (2 + len(names) * len(policies))]
    for w in windows:
        cells = [f"{by[w, p][f'{n}/ndcg@10']:.4f}" for n in names for p in policies]
        lines.append(f"| {w} | {by[w, policies[0]]['test_users']:.0f} | " + " | ".join(cells)
                     + " |")
    later = [w for w in windows if w]
    if later:
        lines += ["", "| policy | training seconds, windows 1+ | mean "
                  f"{student} NDCG@10, windows 1+ |", "|---|---|---|"]
        for p in policies:
            secs = sum(by[w, p]["seconds"] for w in later)
            mean = sum(by[w, p][f"{student}/ndcg@10"] for w in later) / len(later)
            lines.append(f"| {p} | {secs:.0f} | {mean:.4f} |")
        if {"refresh", "stale", "scratch"} <= set(policies):
            ge = all(by[w, "refresh"][f"{student}/ndcg@10"] >= by[w, "stale"][f"{student}/ndcg@10"]
                     for w in later)
            ratio = [by[w, "refresh"][f"{student}/ndcg@10"] / by[w, "scratch"][f"{student}/ndcg@10"]
                     for w in later]
            cost = (sum(by[w, "refresh"]["seconds"] for w in later)
                    / max(1e-9, sum(by[w, "scratch"]["seconds"] for w in later)))
            lines += ["", f"{student}: refresh >= stale on every later window: "
                      f"{'yes' if ge else 'no'}; refresh / scratch NDCG@10 per window: "
                      + ", ".join(f"{x:.3f}" for x in ratio)
                      + f"; refresh compute = {cost:.2f} x scratch."]
    return "\n".join(lines) + "\n"


def paired(rows: list[dict], student: str, policies: list[str]) -> str:
    """Refresh against stale and scratch, user by user: per later window and pooled."""
    if not {"refresh", "stale", "scratch"} <= set(policies):
        return ""
    by = {(r["window"], r["policy"]): r for r in rows}
    later = sorted({r["window"] for r in rows if r["window"]})
    per_user = {key: significance.load_per_user(os.path.join(r["folder"], student))
                for key, r in by.items() if key[0]}
    lines = ["", f"Paired over the window's test users ({student} NDCG@10; Wilcoxon "
             "signed-rank p, two-sided):", "",
             "| window | refresh − stale | p | refresh − scratch | p |", "|---|---|---|---|---|"]
    for w in later + ["pooled"]:
        windows = later if w == "pooled" else [w]
        cells = []
        for other in ("stale", "scratch"):
            t = significance.pooled_test([(per_user[v, "refresh"], per_user[v, other])
                                          for v in windows], "ndcg@10")
            cells += [f"{t['diff']:+.4f}", significance.format_p(t["p_wilcoxon"])]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
