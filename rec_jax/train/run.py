"""The job: data -> split -> each model (train, select on valid, test once) -> report.

``run(config, workdir, stage)`` is what ``rec_jax.main`` calls. Every model of
a run lives in ``<workdir>/<model>/``; a model whose ``results.json`` exists
is finished and is reused, one with a checkpoint resumes, so rerunning the
same command after any interruption completes the job.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time

import jax
import numpy as np
from absl import logging

from rec_jax.data import dataset as dataset_lib
from rec_jax.data import features, interactions, splits
from rec_jax.eval import report
from rec_jax.eval.evaluator import Evaluator, ctr_metrics
from rec_jax.models import registry
from rec_jax.models.students import Popularity
from rec_jax.train import trainer

STAGES = ("all", "teacher", "student", "eval")


def machine_description() -> str:
    devices = jax.devices()
    kind = devices[0].device_kind if devices else "none"
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
            f"{len(devices)} x {devices[0].platform}:{kind}, {jax.process_count()} process(es)")


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _write_json(path: str, obj) -> None:
    if jax.process_index() != 0:
        return
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False, default=float)
    os.replace(path + ".tmp", path)


def prepare_data(config, workdir: str) -> interactions.SplitData:
    """Loads the dataset, splits it and writes the split CSVs."""
    d = config.data
    dataset = dataset_lib.load(d.variant, d.data_dir, d.source_dir or None)
    print(dataset.describe(), flush=True)
    split = splits.make_split(dataset, d.split, config.seed, d.cold_fraction,
                              train_fraction=d.train_fraction)
    if jax.process_index() == 0:
        splits.write_csv(dataset, split, os.path.join(workdir, "split"))
    data = interactions.build(dataset, split, d.head_share)
    print(f"split {d.split} (seed {config.seed}): train {len(split.train):,}, "
          f"valid {len(split.valid):,}, test {len(split.test):,}, "
          f"cold items {len(split.cold_items):,}", flush=True)
    return data


def serving_ms(fn, params, query, side, repeats: int = 30) -> float:
    """Median wall time (ms) of fn(params, query, side) after compilation."""
    jitted = jax.jit(fn)
    jax.block_until_ready(jitted(params, query, side))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(jitted(params, query, side))
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


def evaluate_model(name: str, score_fn, make_query, params, side, data, config, folder: str,
                   ctr_logit_fn=None) -> dict:
    """Valid and test metrics (+ recs/truth CSVs) for the given (best) params."""
    result = {}
    for part in ("valid", "test"):
        ev = Evaluator(data, part, config.eval.ks, config.eval.batch_users, config.eval.num_recs)
        metrics, recs = ev.evaluate(score_fn, params, side, make_query)
        if jax.process_index() == 0 and recs is not None:
            ev.write_recs(recs, folder)
        if ctr_logit_fn is not None:
            metrics.update(ctr_metrics(ctr_logit_fn, params, side, data, part,
                                       config.eval.ctr_threshold))
        result[part] = metrics
        logging.info("[%s] %s: %s", name, part,
                     {k: round(v, 4) for k, v in metrics.items() if "/" not in k})
    return result


def run_model(name: str, config, data, side, workdir: str) -> dict:
    """Trains (or reuses) one model and returns its results entry."""
    folder = os.path.join(workdir, name)
    os.makedirs(folder, exist_ok=True)
    results_path = os.path.join(folder, "results.json")
    if os.path.exists(results_path):
        with open(results_path) as f:
            print(f"[{name}] finished earlier; reusing {results_path}", flush=True)
            return json.load(f)
    query = {"user": np.zeros(1, np.int32)}
    t0 = time.time()
    if name == "pop":
        model = Popularity(data.item_popularity)
        result = evaluate_model(name, model.score_all, registry.user_query, {}, side, data,
                                config, folder)
        result["info"] = {"num_params": 0, "train_seconds": 0.0,
                          "score_ms_per_user": serving_ms(model.score_all, {}, query, side)}
    else:
        spec = registry.build(name, config, data, side)
        cfg = config.model[name.split("_")[0]]
        valid_eval = Evaluator(data, "valid", config.eval.ks, config.eval.batch_users)
        fitted = trainer.fit(spec, cfg, side, folder, valid_eval, config.seed, config.progress)
        train_seconds = time.time() - t0
        result = evaluate_model(name, spec.score_fn, spec.make_query, fitted.params, side, data,
                                config, folder, spec.ctr_logit_fn)
        result["info"] = {
            "num_params": registry.num_params(fitted.params),
            "score_ms_per_user": serving_ms(spec.score_fn, fitted.params,
                                            spec.make_query(query["user"], "test"), side),
            "train_seconds": train_seconds,
            "best_step": fitted.meta["best_step"],
            "steps_done": fitted.meta.get("steps_done"),
            "stopped_early": fitted.meta["stopped_early"],
        }
    _write_json(results_path, result)
    return result


def run(config, workdir: str, stage: str = "all") -> dict:
    """Runs the job described by config in workdir; returns all results."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    os.makedirs(workdir, exist_ok=True)
    _write_json(os.path.join(workdir, "run.json"), {
        "config": config.to_dict(), "machine": machine_description(), "commit": _git_commit(),
        "jax": jax.__version__, "stage": stage})
    data = prepare_data(config, workdir)
    side = features.side_features(data.dataset)
    names = [m.strip() for m in config.models.split(",") if m.strip()]
    results = report.read_results(workdir)
    for name in names:
        if stage == "teacher" and name != "teacher":
            continue
        if stage == "student" and name == "teacher":
            continue
        if stage == "eval":
            raise NotImplementedError("stage=eval arrives with the teacher stage")
        results[name] = run_model(name, config, data, side, workdir)
        _write_json(os.path.join(workdir, "results.json"), results)
    header = (f"# {os.path.basename(os.path.abspath(workdir))}\n\n"
              f"Data {data.dataset.name}, split `{config.data.split}`, seed {config.seed}; "
              f"test metrics (full ranking over {data.num_items:,} items); "
              f"machine: {machine_description()}.")
    text = report.write_report(workdir, {k: results[k] for k in names if k in results}, header)
    print(text, flush=True)
    if jax.process_index() == 0 and all(n in results for n in names):
        open(os.path.join(workdir, "COMPLETE"), "w").close()
    return results
