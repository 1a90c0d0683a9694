"""Scale and speed benchmark: training, evaluation, encoder, serving, memory.

    python -m rec_jax.bench [--sizes ml100k,100k,1m,10m] [--out FILE.json] [--quick]

prints a Markdown table and writes the JSON (default ``workdir/bench/results.json``)
and, next to it, ``<out>_epoch.png``: time per epoch versus data size with a
linear reference. Every figure
is a median over repeats after compilation; the machine (cores, device kind,
load average) is recorded, because on a shared machine the load moves wall
times by tens of percent.

Parts (``--parts``, default all):

* ``train``: student examples/s (MF, SASRec, DeepFM) through the real step
  (``registry.parts`` + ``plain_spec`` + ``make_pmapped_step``) and the real
  ``TrainPipeline``, summing metrics on device as ``trainer.fit`` does. Data:
  real ml-100k (``ml100k``) and synthetic MovieLens (``100k``, ``1m``,
  ``10m``: ``rec_jax.data.synthetic`` in the ml-1m layout, prepared through
  the TFDS builder once and cached under ``--data_dir``; preparation time is
  reported). An epoch is timed whole when it has at most ``--max_steps``
  steps, else that many steps are timed and the epoch time extrapolated
  (marked ``*``). For MF on ml-100k a profile splits the step time into
  batch building, host->device transfer, the step itself and the metric
  sums, and compares the tf / numpy engines, several steps per call and
  ``trainer.fit`` end to end.
* ``eval``: full-ranking ``Evaluator`` (all test users x all items) on ml-100k.
* ``encoder``: teacher BERT items/s forward and forward+backward, fp32 and
  bf16 (``rec_jax.bench_encoder``), with FLOPs from XLA's cost analysis.
* ``teacher_step``: the teacher's train step (``--teacher_freeze``,
  ``--dtype``): step time, XLA FLOPs per step, achieved FLOP/s and
  its fraction of the device's peak (GPUs with a known peak).
* ``serving``: latency of ranking the whole catalogue (scores + top 20) for
  1 and 1,024 users, MF vs the teacher; the teacher's per-user cost includes
  encoding the profile text with BERT (as ``run.bert_user_text_ms``).
* ``mesh``: per-device memory of a 10M-item x 64 MF with Adam at 1/2/4/8
  devices (``rec_jax.train.mesh``, in a child process with 8 fake CPU
  devices unless the machine has 8).

Without TensorFlow (``--no_tf``, or TF absent) only prepared ``arrays.npz``
files are read and the numpy input engine is used.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # `configs` imports from the checkout.
    sys.path.insert(0, REPO_ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

SIZES = {"ml100k": None, "100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}
STUDENTS = ("mf", "sasrec", "deepfm")
# Dense bf16 tensor-core peak per chip (vendor datasheets, no sparsity).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12,
                   "L4": 121e12, "L40S": 362e12, "A10G": 70e12, "V100": 125e12,
                   "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12,
                   "TPU v5p": 459e12, "TPU v6": 918e12}


# ---------------------------------------------------------------------------
# Machine and timing helpers.
# ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info() -> dict:
    devices = jax.devices()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": _cpu_model(), "cpu_cores": os.cpu_count(), "usable_cores": usable,
            "memory_gib": mem_gib, "platform": devices[0].platform,
            "device_kind": devices[0].device_kind, "device_count": len(devices),
            "jax": jax.__version__, "python": platform.python_version(),
            "load_average_start": load_average()}


def machine_line(m: dict) -> str:
    return (f"{m['cpu']} ({m['usable_cores']} usable of {m['cpu_cores']} cores, "
            f"{m['memory_gib']} GiB), {m['device_count']} x {m['platform']}:{m['device_kind']}, "
            f"JAX {m['jax']}, load avg {m['load_average_start']} -> {m.get('load_average_end')}")


def peak_flops(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s of a device kind, if known (longest name match)."""
    kind = device_kind.upper()
    hits = [k for k in PEAK_BF16_FLOPS if k.upper() in kind]
    return PEAK_BF16_FLOPS[max(hits, key=len)] if hits else None


def memory_snapshot() -> dict:
    """Host peak RSS, and device memory stats where the backend reports them."""
    out = {"host_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends may not implement it
        stats = None
    if stats:
        out["device_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
        out["device_bytes_limit"] = stats.get("bytes_limit")
    return out


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall milliseconds of fn() (blocking on its result); fn compiled already."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times)


def cost_flops(compiled) -> float | None:
    """FLOPs of a compiled computation from XLA's cost analysis (None if absent)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


# ---------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------


def _has_tf() -> bool:
    try:
        import tensorflow  # noqa: F401
        import tensorflow_datasets  # noqa: F401
        return True
    except ImportError:
        return False


def synthetic_source(label: str, data_dir: str) -> str:
    return os.path.join(data_dir, "synthetic", f"ml-syn-{label}")


def load_size(label: str, data_dir: str, allow_prepare: bool,
              prepared: str | None = None) -> tuple[Any, dict]:
    """The dataset of a size label, generating and preparing it through TFDS once.

    Returns:
      (dataset, info): info has the generation and TFDS preparation seconds
      of the first preparation (kept in the prepared folder) and this load's
      seconds.
    """
    from rec_jax.data import dataset as dataset_lib
    from rec_jax.data import synthetic
    info: dict = {"label": label}
    if SIZES[label] is None:  # The real ml-100k (RecBole wheel).
        t = time.time()
        ds = dataset_lib.load("100k", data_dir, None, prepared or None)
        info["load_seconds"] = time.time() - t
        return ds, info
    source = synthetic_source(label, data_dir)
    marker = source + ".stats.json"  # Beside, not inside: it would change the source digest.
    if not os.path.exists(marker):
        if not allow_prepare:
            raise FileNotFoundError(f"{source} is not generated (and TF is unavailable)")
        t = time.time()
        stats = synthetic.generate(source, SIZES[label], seed=0)
        stats["generate_seconds"] = time.time() - t
        with open(marker + ".tmp", "w") as f:
            json.dump(stats, f)
        os.replace(marker + ".tmp", marker)
    with open(marker) as f:
        stats = json.load(f)
    info["generate_seconds"] = stats.get("generate_seconds", stats.get("seconds"))
    folder = dataset_lib.prepared_dir(data_dir, "1m", source)
    timing = os.path.join(folder, "prepare_seconds.json")
    fresh = not os.path.exists(os.path.join(folder, "arrays.npz"))
    if fresh and not allow_prepare:
        raise FileNotFoundError(f"{folder}/arrays.npz missing and TF is unavailable")
    t = time.time()
    ds = dataset_lib.load("1m", data_dir, source)
    seconds = time.time() - t
    if fresh:
        with open(timing, "w") as f:
            json.dump({"seconds": seconds, "interactions": int(ds.num_interactions)}, f)
    info["load_seconds"] = seconds
    if os.path.exists(timing):
        with open(timing) as f:
            prep = json.load(f)
        info["tfds_prepare_seconds"] = prep["seconds"]
        info["tfds_prepare_examples_per_s"] = prep["interactions"] / prep["seconds"]
    return ds, info


def split_data(ds, split: str = "ratio", seed: int = 0):
    from rec_jax.data import features, interactions, splits
    t = time.time()
    data = interactions.build(ds, splits.make_split(ds, split, seed))
    return data, features.side_features(ds), time.time() - t


# ---------------------------------------------------------------------------
# Training throughput.
# ---------------------------------------------------------------------------


def _setup_training(name: str, config, data, side, engine: str, seed: int = 0):
    from rec_jax.data.pipeline import TrainPipeline
    from rec_jax.models import registry
    from rec_jax.train import optim
    from rec_jax.train import step as step_lib
    spec = registry.plain_spec(registry.parts(name, config, data, side))
    cfg = registry.model_config(config, name)
    pipe = TrainPipeline(spec.source, cfg.train.batch_size_per_device, seed,
                         engine=engine or cfg.train.get("input_engine", "auto"))
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    params = spec.init(init_key)
    tx = optim.make_optimizer(cfg.optim, 10 * pipe.steps_per_epoch, params, spec.label_fn)
    state = step_lib.replicate(step_lib.init_state(params, tx))
    spec.num_params = int(sum(np.size(x) for x in jax.tree.leaves(params)))
    return spec, cfg, pipe, tx, state, step_lib.replicate(side), \
        step_lib.replicate(spec.frozen), step_key


def _add(acc, sums):
    return sums if acc is None else jax.tree.map(lambda a, b: a + b, acc, sums)


def train_throughput(name: str, config, data, side, max_steps: int, repeats: int,
                     engine: str = "", steps_per_call: int = 1, budget_s: float = 20.0,
                     mode: str = "pmap") -> dict:
    """Examples/s of the real step + pipeline, and the (possibly extrapolated) epoch time.

    One pipeline iterator runs through warm-up and every timed repeat, as in
    ``trainer.fit`` (which opens one for the whole run); each repeat times
    `steps` consecutive steps (a whole epoch when it has at most
    min(max_steps, what fits in budget_s) steps), metric sums added on device
    as the trainer does.

    Args:
      mode: "pmap" (``make_pmapped_step``, what ``trainer.fit`` runs; with
        steps_per_call > 1 the multi-step variant) or "mesh"
        (``rec_jax.train.mesh.make_mesh_step`` on a (devices, 1) mesh: plain
        jit, state without a device axis, item tables unsharded).
    """
    from rec_jax.train import mesh as mesh_lib
    from rec_jax.train import step as step_lib
    spec, cfg, pipe, tx, state, side_r, frozen_r, key = _setup_training(
        name, config, data, side, engine)
    k = steps_per_call
    if mode == "mesh":
        if k != 1:
            raise ValueError("mesh mode runs one step per call")
        mesh = mesh_lib.make_mesh()
        state = step_lib.unreplicate(state)
        shardings = mesh_lib.tree_shardings(state, mesh, data.num_items)
        side_shardings = mesh_lib.tree_shardings(side, mesh, data.num_items)
        state = jax.device_put(state, shardings)
        side_r, frozen_r = jax.device_put(side, side_shardings), spec.frozen
        p_step = mesh_lib.make_mesh_step(spec.loss_fn, tx, mesh, shardings, side_shardings)

        def batches_for(a, b, _k):
            return pipe.mesh_batches(a, b, mesh_lib.batch_sharding(mesh))

        def first(x):
            return np.asarray(jax.device_get(x))
    else:
        p_step = (step_lib.make_pmapped_multi_step(spec.loss_fn, tx) if k > 1
                  else step_lib.make_pmapped_step(spec.loss_fn, tx))
        batches_for = pipe.device_batches

        def first(x):
            return np.asarray(jax.device_get(x))[0]
    spe = pipe.steps_per_epoch
    # Warm-up: compile, then time 2 calls to size the timed segments.
    t = time.perf_counter()
    for batch in batches_for(0, k, k):
        state, sums = p_step(state, batch, side_r, frozen_r, key)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for batch in batches_for(k, 3 * k, k):
        state, sums = p_step(state, batch, side_r, frozen_r, key)
    jax.block_until_ready(state)
    probe_step_s = (time.perf_counter() - t) / (2 * k)
    steps = min(spe, max_steps, max(10, int(budget_s / max(probe_step_s, 1e-6))))
    steps = max(k, steps // k * k)
    start = 3 * k
    batches = batches_for(start, start + steps * repeats, k)
    times, cpu_times = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        acc = None
        for _ in range(steps // k):
            state, sums = p_step(state, next(batches), side_r, frozen_r, key)
            acc = _add(acc, sums)
        jax.block_until_ready((state, acc))
        times.append(time.perf_counter() - t)
        cpu_times.append(time.process_time() - c)
    loss = float(first(acc["loss"]) / max(float(first(acc["examples"])), 1.0))
    med = statistics.median(times)
    label = name if mode == "pmap" else f"{name} (mesh)"
    return {"model": label, "mode": mode, "engine": pipe.engine, "steps_per_call": k,
            "num_params": spec.num_params, "global_batch": pipe.global_batch,
            "steps_per_epoch": spe, "timed_steps": steps,
            "train_examples": spe * pipe.global_batch, "compile_s": compile_s,
            "seconds": times, "examples_per_s": steps * pipe.global_batch / med,
            # Process CPU time (all threads): steadier than wall time on a shared machine.
            "examples_per_cpu_s": steps * pipe.global_batch / statistics.median(cpu_times),
            "step_ms": 1000 * med / steps, "epoch_s": med * spe / steps,
            "epoch_measured": steps == spe, "loss": loss}


def mf_profile(config, data, side, repeats: int, quick: bool) -> dict:
    """Where an MF step's time goes on this machine (ml-100k, one epoch)."""
    from rec_jax.data.pipeline import device_sharding
    from rec_jax.train import step as step_lib
    out: dict = {}
    spec, cfg, pipe, tx, state, side_r, frozen_r, key = _setup_training(
        "mf", config, data, side, "numpy")
    spe = pipe.steps_per_epoch
    host = [pipe.host_batch(s) for s in range(spe)]
    out["build_batch_ms"] = median_ms(lambda: [pipe.host_batch(s) for s in range(spe)],
                                      repeats) / spe
    sharding = device_sharding()

    def put():
        return [jax.tree.map(lambda x: jax.device_put(x, sharding), b) for b in host]
    placed = put()
    out["host_to_device_ms"] = median_ms(put, repeats) / spe
    p_step = step_lib.make_pmapped_step(spec.loss_fn, tx)
    holder = {"state": state}

    def run_steps(accumulate: bool):
        def go():
            acc, st = None, holder["state"]
            for b in placed:
                st, sums = p_step(st, b, side_r, frozen_r, key)
                if accumulate:
                    acc = _add(acc, sums)
            holder["state"] = st
            return st, acc
        return go
    jax.block_until_ready(run_steps(True)())  # compile
    out["step_ms"] = median_ms(run_steps(False), repeats) / spe
    out["step_plus_sums_ms"] = median_ms(run_steps(True), repeats) / spe
    out["metric_sums_ms"] = out["step_plus_sums_ms"] - out["step_ms"]
    # The jitted step on one device without pmap: the dispatch pmap adds.
    import functools
    one = jax.jit(functools.partial(step_lib.global_train_step, loss_fn=spec.loss_fn, tx=tx),
                  donate_argnums=(0,))
    flat = [jax.device_put(pipe.global_host_batch(s)) for s in range(spe)]
    side_1 = jax.device_put(side)
    st1 = {"s": jax.device_put(step_lib.unreplicate(holder["state"]))}

    def run_jit():
        s = st1["s"]
        for b in flat:
            s, _ = one(s, b, side_1, None, key)
        st1["s"] = s
        return s
    jax.block_until_ready(run_jit())
    out["jit_step_ms"] = median_ms(run_jit, repeats) / spe
    out["pmap_overhead_ms"] = out["step_ms"] - out["jit_step_ms"]
    out["global_batch"] = pipe.global_batch
    out["steps_per_epoch"] = spe
    # Whole-loop variants: engines and several steps per call.
    variants = {}
    for label, engine, k in (("tf engine", "tf", 1), ("numpy engine", "numpy", 1),
                             ("numpy, 8 steps/call", "numpy", 8)):
        if engine == "tf" and (quick or not _has_tf()):
            continue
        r = train_throughput("mf", config, data, side, spe, repeats, engine, k)
        variants[label] = {"examples_per_s": r["examples_per_s"], "epoch_s": r["epoch_s"]}
    out["variants"] = variants
    if not quick:
        out["trainer_fit"] = trainer_fit_throughput(config, data, side)
    return out


def trainer_fit_throughput(config, data, side, epochs: int = 3) -> dict:
    """trainer.fit end to end (validation + checkpoint every epoch), for reference."""
    from rec_jax.eval.evaluator import Evaluator
    from rec_jax.models import registry
    from rec_jax.train import trainer
    spec = registry.plain_spec(registry.parts("mf", config, data, side))
    cfg = copy.deepcopy(registry.model_config(config, "mf"))  # the shared config stays as is
    cfg.train.epochs = float(epochs)
    cfg.train.patience = 1000
    evaluator = Evaluator(data, "valid", config.eval.ks, config.eval.batch_users)
    with tempfile.TemporaryDirectory() as folder:
        t = time.time()
        fitted = trainer.fit(spec, cfg, side, folder, evaluator, 0, "off")
        seconds = time.time() - t
    steps = fitted.meta.get("steps_done", 0)
    batch = cfg.train.batch_size_per_device * jax.device_count()
    return {"epochs": epochs, "seconds": seconds, "steps": steps,
            "examples_per_s": steps * batch / seconds,
            "note": "includes compile, validation and an Orbax checkpoint every epoch"}


# ---------------------------------------------------------------------------
# Evaluation.
# ---------------------------------------------------------------------------


def eval_throughput(config, data, side, repeats: int, models=("mf", "sasrec", "deepfm")) -> dict:
    from rec_jax.eval.evaluator import Evaluator
    from rec_jax.models import registry
    out = {}
    for name in models:
        parts = registry.parts(name, config, data, side)
        params = parts.init(jax.random.PRNGKey(0))
        for batch_users in (config.eval.batch_users, 1024):
            ev = Evaluator(data, "test", config.eval.ks, batch_users, config.eval.num_recs)
            for keep in (False, True):
                def go():
                    return ev.evaluate(parts.score_fn, params, side, parts.make_query,
                                       keep_recs=keep)[0]
                t = time.perf_counter()
                go()
                compile_s = time.perf_counter() - t
                ms = median_ms(go, repeats)
                out[f"{name} batch {batch_users}{' +recs' if keep else ''}"] = {
                    "model": name, "users": len(ev.users), "items": data.num_items,
                    "batch_users": batch_users, "keep_recs": keep, "seconds": ms / 1000,
                    "users_per_s": len(ev.users) / (ms / 1000), "first_call_s": compile_s}
    return out


# ---------------------------------------------------------------------------
# Teacher encoder and teacher step.
# ---------------------------------------------------------------------------


def encoder_bench(quick: bool, repeats: int, bert_path: str | None) -> dict:
    from rec_jax import bench_encoder
    texts = bench_encoder.item_texts()
    if quick:  # Two batches of 64: few shapes to compile.
        texts = texts[:128]
    out = {}
    for dtype in ("float32", "bfloat16"):
        r = bench_encoder.encoder_throughput(bert_path, texts=texts, dtype=dtype,
                                             repeats=repeats, bucket=True)
        out[dtype] = {k: r[k] for k in ("items", "batches", "real_tokens", "padded_tokens",
                                        "fwd_items_per_s", "fwd_bwd_items_per_s",
                                        "fwd_compile_s", "fwd_bwd_compile_s")}
    out.update(encoder_flops(bert_path))
    return out


def encoder_flops(bert_path: str | None, batch: int = 64, length: int = 32) -> dict:
    """FLOPs per item (fwd, fwd+bwd) of a [64, 32] batch: XLA cost analysis and analytic."""
    from rec_jax.models.bert import load_pretrained, mean_pool
    model, params, _ = load_pretrained(bert_path, with_tokenizer=False)
    ids = jnp.ones((batch, length), jnp.int32)
    mask = jnp.ones((batch, length), jnp.int32)

    def fwd(p, ids, mask):
        return mean_pool(model.apply(p, ids, mask)["last_hidden_state"], mask)

    def loss(p, ids, mask):
        return jnp.sum(fwd(p, ids, mask) ** 2)
    out = {"flops_batch": batch, "flops_length": length}
    out["xla_fwd_flops_per_item"] = (cost_flops(jax.jit(fwd).lower(params, ids, mask).compile())
                                     or 0.0) / batch
    out["xla_fwd_bwd_flops_per_item"] = (
        cost_flops(jax.jit(jax.grad(loss)).lower(params, ids, mask).compile()) or 0.0) / batch
    # Analytic: per token and layer 2 * (4 H^2 + 2 H F) matmul FLOPs + 2 * 2 * L * H attention.
    s = model.settings if hasattr(model, "settings") else None
    if s is not None:
        h, f, n = s.hidden_size, s.intermediate_size, s.num_layers
        per_token = n * (2 * (4 * h * h + 2 * h * f) + 4 * length * h)
        out["analytic_fwd_flops_per_item"] = per_token * length
        out["analytic_fwd_bwd_flops_per_item"] = 3 * per_token * length
    return out


def teacher_step_bench(config, data, side_fn, repeats: int, steps: int = 10) -> dict:
    """The teacher's train step: time, XLA FLOPs, FLOP/s and fraction of peak."""
    import functools

    from rec_jax.models import registry
    from rec_jax.train import optim
    from rec_jax.train import step as step_lib
    side = side_fn(["teacher"])
    spec = registry.plain_spec(registry.parts("teacher", config, data, side))
    cfg = config.teacher
    from rec_jax.data.pipeline import TrainPipeline
    pipe = TrainPipeline(spec.source, cfg.train.batch_size_per_device, 0, engine="numpy")
    params = spec.init(jax.random.PRNGKey(0))
    tx = optim.make_optimizer(cfg.optim, 1000, params, spec.label_fn)
    state = jax.device_put(step_lib.init_state(params, tx))
    one = jax.jit(functools.partial(step_lib.global_train_step, loss_fn=spec.loss_fn, tx=tx),
                  donate_argnums=(0,))
    # One device's share of the global batch (what each pmap replica computes).
    batches = [jax.device_put(jax.tree.map(lambda x: x[0], pipe.host_batch(s)))
               for s in range(steps)]
    side_d = jax.device_put(side)
    key = jax.random.PRNGKey(1)
    t = time.perf_counter()
    compiled = one.lower(state, batches[0], side_d, None, key).compile()
    compile_s = time.perf_counter() - t
    flops = cost_flops(compiled)
    holder = {"s": state}

    def go():
        s = holder["s"]
        for b in batches:
            s, sums = compiled(s, b, side_d, None, key)
        holder["s"] = s
        return s, sums
    jax.block_until_ready(go())
    ms = median_ms(go, repeats) / steps
    kind = jax.devices()[0].device_kind
    peak = peak_flops(kind)
    examples = float(np.mean([np.sum(np.asarray(b["targets"]) >= 0) for b in batches]))
    out = {"freeze": cfg.freeze, "dtype": config.dtype, "batch_per_device": pipe.per_device_batch,
           "step_ms": ms, "compile_s": compile_s, "flops_per_step": flops,
           "target_positions_per_step": examples,
           "achieved_flops_per_s": flops / (ms / 1000) if flops else None,
           "device_kind": kind, "peak_bf16_flops": peak}
    if flops and peak:
        out["fraction_of_peak"] = out["achieved_flops_per_s"] / peak
    return out


# ---------------------------------------------------------------------------
# Serving.
# ---------------------------------------------------------------------------


def serving_bench(config, data, side_fn, repeats: int, k: int = 20) -> dict:
    """Latency of ranking the full catalogue (scores + top k), MF vs the teacher.

    Two call forms, each a median after compilation:

    * ``args``: ``jit(fn)(params, query, side)``, as ``run.serving_ms`` times
      it (every parameter and side table crosses the call boundary);
    * ``served``: weights and side tables closed over (loaded once, as a
      server holds them), only the request (user ids, and the history for
      the teacher) passed per call.

    The teacher serves with its item-text vectors computed offline (the
    frozen-encoder form, whatever `teacher.freeze` trained it: a fine-tuned
    BERT's item vectors are precomputed the same way), while a user's profile
    text is encoded by BERT per request and timed separately and added
    (``run.bert_user_text_ms``'s honest cost).
    """
    from rec_jax.data import text as text_lib
    from rec_jax.models import bert as bert_lib
    from rec_jax.models import registry
    config = copy.deepcopy(config)
    config.teacher.freeze = "encoder"
    side = side_fn(["mf", "teacher"], config)
    big_repeats = max(2, repeats // 5)  # a 1,024-user teacher call takes seconds on a CPU
    out: dict = {"k": k, "num_items": data.num_items, "repeats": repeats,
                 "repeats_1024": big_repeats}
    for name in ("mf", "teacher"):
        parts = registry.parts(name, config, data, side)
        params = jax.device_put(parts.init(jax.random.PRNGKey(0)))
        side_d = jax.device_put(side)

        @jax.jit
        def rank(params, query, side, score_fn=parts.score_fn):
            return jax.lax.top_k(score_fn(params, query, side), k)

        @jax.jit
        def served(query, score_fn=parts.score_fn, params=params, side=side_d):
            return jax.lax.top_k(score_fn(params, query, side), k)
        for batch in (1, 1024):
            users = (np.arange(batch) % data.num_users).astype(np.int32)
            query = parts.make_query(users, "test")
            n = repeats if batch == 1 else big_repeats
            jax.block_until_ready(rank(params, query, side_d))
            out[f"{name}_args_ms_{batch}"] = median_ms(lambda: rank(params, query, side_d), n)
            jax.block_until_ready(served(query))
            out[f"{name}_rank_ms_{batch}"] = median_ms(lambda: served(query), n)
    # The teacher's honest cost: a user's profile text goes through BERT first.
    cfg = config.teacher
    model, variables, tokenizer = bert_lib.load_pretrained(cfg.bert_path or None)
    variables = jax.device_put(variables)
    texts = text_lib.user_texts(data.dataset)

    @jax.jit
    def encode(tokens):
        h = model.apply(variables, tokens["input_ids"], tokens["attention_mask"],
                        tokens["token_type_ids"])["last_hidden_state"]
        return bert_lib.mean_pool(h, tokens["attention_mask"])
    for batch in (1, 1024):
        batch_texts = [texts[u % len(texts)] for u in range(batch)]
        tokens = text_lib.tokenize(tokenizer, batch_texts, cfg.user_text_len)
        jax.block_until_ready(encode(tokens))
        out[f"teacher_bert_user_text_ms_{batch}"] = median_ms(
            lambda: encode(tokens), repeats if batch == 1 else big_repeats)
        for form in ("rank", "args"):
            total = out[f"teacher_{form}_ms_{batch}"] + out[f"teacher_bert_user_text_ms_{batch}"]
            out[f"teacher_total_{form}_ms_{batch}"] = total
            out[f"speedup_{form}_{batch}"] = total / out[f"mf_{form}_ms_{batch}"]
        out[f"teacher_total_ms_{batch}"] = out[f"teacher_total_rank_ms_{batch}"]
        out[f"speedup_{batch}"] = out[f"speedup_rank_{batch}"]
    return out


# ---------------------------------------------------------------------------
# Mesh memory (child process with 8 devices).
# ---------------------------------------------------------------------------


def mesh_memory(num_items: int = 10_000_000, dim: int = 64) -> list[dict]:
    if jax.device_count() >= 8:
        from rec_jax.train import mesh as mesh_lib
        return mesh_lib.memory_per_device(num_items, dim)
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "rec_jax.train.mesh", "--num_items",
                           str(num_items), "--dim", str(dim)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in rows:
        r["where"] = "8 fake CPU devices (compiled, not run)"
    return rows


# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------


def _fmt(x, digits=0) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "-"
    return f"{x:,.{digits}f}"


def growth_exponent(points: list[tuple[int, float]]) -> float | None:
    """Slope of log(epoch time) vs log(size) between the smallest and largest size."""
    pts = sorted(p for p in points if p[1] and p[1] > 0)
    if len(pts) < 2:
        return None
    (n0, t0), (n1, t1) = pts[0], pts[-1]
    return math.log(t1 / t0) / math.log(n1 / n0)


def markdown(res: dict) -> str:
    lines = [f"Machine: {machine_line(res['machine'])}", ""]
    train = res.get("train")
    if train:
        lines += ["### Student training (real step + pipeline, median after compile)", "",
                  "| data | interactions | train ex. | model | params | batch | steps/epoch | "
                  "ex/s | ex/CPU-s | ms/step | s/epoch | data prep |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, entry in train.items():
            d = entry["data"]
            prep = (f"TFDS {d['tfds_prepare_seconds']:.0f} s "
                    f"({d['tfds_prepare_examples_per_s']:,.0f} ex/s)"
                    if d.get("tfds_prepare_seconds") else f"load {d.get('load_seconds', 0):.1f} s")
            for r in entry["models"].values():
                if "error" in r:
                    lines.append(f"| {label} | | | {r['model']} | | | | error: {r['error']} "
                                 "| | | | |")
                    continue
                lines.append(
                    f"| {label} | {d['interactions']:,} | {r['train_examples']:,} | {r['model']} | "
                    f"{r.get('num_params', 0) / 1e6:.2f}M | {r['global_batch']} | {r['steps_per_epoch']:,} | "
                    f"{_fmt(r['examples_per_s'])} | {_fmt(r.get('examples_per_cpu_s'))} | "
                    f"{r['step_ms']:.2f} | "
                    f"{r['epoch_s']:.2f}{'' if r['epoch_measured'] else '*'} | {prep} |")
        lines += ["", "`*` epoch time extrapolated from the timed steps. An example is a "
                  "(user, item, negatives) triple for MF, a rated pair with its sampled "
                  "negatives for DeepFM, and a user's whole sequence (up to 50 positions, "
                  "full softmax) for SASRec."]
        growth = res.get("epoch_growth", {})
        if growth:
            lines += ["", "Epoch-time growth exponent (log t / log N, synthetic sizes; 1 = linear): "
                      + ", ".join(f"{m} {g:.2f}" for m, g in growth.items() if g is not None)]
    prof = res.get("mf_profile")
    if prof:
        lines += ["", "### MF step profile (ml-100k, per step of "
                  f"{prof['global_batch']} examples)", "",
                  "| part | ms/step |", "|---|---|"]
        for key in ("build_batch_ms", "host_to_device_ms", "jit_step_ms", "pmap_overhead_ms",
                    "step_ms", "metric_sums_ms"):
            lines.append(f"| {key[:-3].replace('_', ' ')} | {prof[key]:.3f} |")
        for label, v in prof.get("variants", {}).items():
            lines.append(f"| whole loop, {label} | {1000 * v['epoch_s'] / prof['steps_per_epoch']:.3f}"
                         f" ({v['examples_per_s']:,.0f} ex/s) |")
        if "trainer_fit" in prof:
            f = prof["trainer_fit"]
            lines.append(f"| trainer.fit, {f['epochs']} epochs ({f['note']}) | "
                         f"{f['seconds']:.1f} s total ({f['examples_per_s']:,.0f} ex/s) |")
    ev = res.get("eval")
    if ev:
        lines += ["", "### Full-ranking evaluation (ml-100k test users x all items)", "",
                  "| model | batch users | +recs | users | items | seconds | users/s |",
                  "|---|---|---|---|---|---|---|"]
        for r in ev.values():
            lines.append(f"| {r['model']} | {r['batch_users']} | {'yes' if r['keep_recs'] else 'no'}"
                         f" | {r['users']} | {r['items']:,} | {r['seconds']:.4f} | "
                         f"{_fmt(r['users_per_s'])} |")
    enc = res.get("encoder")
    if enc:
        lines += ["", f"### Teacher encoder (BERT, {enc['float32']['items']} item texts, bucketed)",
                  "", "| dtype | fwd items/s | fwd+bwd items/s |", "|---|---|---|"]
        for dtype in ("float32", "bfloat16"):
            r = enc[dtype]
            lines.append(f"| {dtype} | {_fmt(r['fwd_items_per_s'], 1)} | "
                         f"{_fmt(r['fwd_bwd_items_per_s'], 1)} |")
        lines.append(f"\nFLOPs per item at length {enc['flops_length']}: fwd "
                     f"{enc['xla_fwd_flops_per_item'] / 1e9:.2f} GFLOP (XLA), "
                     f"{enc.get('analytic_fwd_flops_per_item', 0) / 1e9:.2f} (analytic); "
                     f"fwd+bwd {enc['xla_fwd_bwd_flops_per_item'] / 1e9:.2f} (XLA)")
    ts = res.get("teacher_step")
    if ts:
        frac = ts.get("fraction_of_peak")
        lines += ["", f"### Teacher train step (freeze={ts['freeze']}, {ts['dtype']}, batch "
                  f"{ts['batch_per_device']}/device)", "",
                  f"{ts['step_ms']:.1f} ms/step, {(ts['flops_per_step'] or 0) / 1e9:.1f} GFLOP/step "
                  f"(XLA), {(ts['achieved_flops_per_s'] or 0) / 1e12:.3f} TFLOP/s achieved"
                  + (f", {100 * frac:.1f}% of {ts['peak_bf16_flops'] / 1e12:.0f} TFLOP/s bf16 peak"
                     if frac else " (no known peak for this device)")]
    sv = res.get("serving")
    if sv:
        lines += ["", f"### Serving: rank all {sv['num_items']:,} items (scores + top {sv['k']})",
                  "", "| users | call form | MF ms | teacher ms (rank + BERT profile text) | "
                  "speedup |", "|---|---|---|---|---|"]
        for b in (1, 1024):
            for form, label in (("rank", "served (weights held)"), ("args", "jit(params, ...)")):
                if f"mf_{form}_ms_{b}" not in sv:
                    continue
                lines.append(
                    f"| {b} | {label} | {sv[f'mf_{form}_ms_{b}']:.3f} | "
                    f"{sv[f'teacher_total_{form}_ms_{b}']:.2f} "
                    f"({sv[f'teacher_{form}_ms_{b}']:.2f} + "
                    f"{sv[f'teacher_bert_user_text_ms_{b}']:.2f}) | "
                    f"{sv[f'speedup_{form}_{b}']:.0f}x |")
    mm = res.get("mesh_memory")
    if mm:
        lines += ["", "### 10M-item x 64 MF + Adam, row-sharded: memory per device", "",
                  "| devices | item rows/device | params+moments GiB | step peak GiB (XLA) |",
                  "|---|---|---|---|"]
        for r in mm:
            if "skipped" in r:
                continue
            lines.append(f"| {r['devices']} | {r['item_rows_per_device']:,} | "
                         f"{r['state_bytes'] / 2**30:.2f} | "
                         f"{r.get('peak_bytes', float('nan')) / 2**30:.2f} |")
    tg = res.get("targets")
    if tg:
        lines += ["", "### Targets", "", "| target | measured | met |", "|---|---|---|"]
        for t in tg:
            lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |")
    mem = res.get("memory")
    if mem:
        lines += ["", f"Peak host RSS {mem['host_peak_rss_gib']:.2f} GiB"
                  + (f"; device peak {mem['device_peak_bytes_in_use'] / 2**30:.2f} GiB"
                     if mem.get("device_peak_bytes_in_use") else "")]
    if res.get("part_seconds"):
        lines.append("Benchmark seconds by part: " + ", ".join(
            f"{k} {v:.0f}" for k, v in res["part_seconds"].items()))
    return "\n".join(lines)


def plot_epochs(res: dict, path: str) -> str | None:
    """Time per epoch vs interactions (log-log) per model, with a linear reference."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series: dict[str, list] = {}
    for label, entry in res.get("train", {}).items():
        if SIZES.get(label) is None:
            continue
        for name, r in entry["models"].items():
            if "epoch_s" in r:
                series.setdefault(name, []).append((entry["data"]["interactions"], r["epoch_s"],
                                                    r["epoch_measured"]))
    if not any(len(v) >= 1 for v in series.values()):
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, pts in sorted(series.items()):
        pts.sort()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        line, = ax.plot(xs, ys, "o-", label=name)
        ax.plot(xs, [ys[0] * x / xs[0] for x in xs], ":", color=line.get_color(),
                label=f"{name}: linear from smallest")
        for x, y, measured in pts:
            if not measured:
                ax.annotate("extrap.", (x, y), fontsize=7, xytext=(3, -9),
                            textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("interactions (synthetic MovieLens)")
    ax.set_ylabel("seconds per training epoch")
    ax.set_title(f"epoch time vs data size\n{res['machine']['cpu'][:40]}, "
                 f"{res['machine']['device_count']} x {res['machine']['device_kind']}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def evaluate_targets(res: dict) -> list[dict]:
    out = []
    train = res.get("train", {})
    mf = train.get("ml100k", {}).get("models", {}).get("mf")
    if mf and "examples_per_s" in mf:
        out.append({"target": "MF training >= 500,000 ex/s on ml-100k",
                    "measured": f"{mf['examples_per_s']:,.0f} ex/s",
                    "met": mf["examples_per_s"] >= 500_000})
    ev = res.get("eval", {})
    key = next((k for k in ev if k.startswith("mf batch") and "+recs" not in k), None)
    if key:
        best = min(v["seconds"] for k, v in ev.items() if v["model"] == "mf")
        out.append({"target": "full-ranking eval of ml-100k (943 x 1,682), MF < 0.1 s",
                    "measured": f"{ev[key]['seconds']:.3f} s (default batch); best {best:.3f} s",
                    "met": ev[key]["seconds"] < 0.1})
    growth = res.get("epoch_growth", {})
    for name, g in growth.items():
        if g is not None:
            out.append({"target": f"{name} epoch time grows <= linearly (100k -> largest)",
                        "measured": f"exponent {g:.2f}", "met": g <= 1.05})
    sv = res.get("serving")
    if sv:
        out.append({"target": "student ranks a user's catalogue >= 100x faster than the teacher",
                    "measured": f"{sv['speedup_1']:.0f}x (1 user, served), "
                                f"{sv.get('speedup_args_1', float('nan')):.0f}x (1 user, "
                                f"jit(params, ...)), {sv['speedup_1024']:.0f}x (1,024 users)",
                    "met": sv["speedup_1"] >= 100})
    return out


# ---------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------


def load_config(spec: str):
    """base_config(), or get_config(arg) of a config file given as "path[:arg]"."""
    if not spec:
        from configs import common
        return common.base_config()
    import importlib.util
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="ml100k,100k,1m,10m",
                        help="comma list of ml100k (real) and synthetic 100k,1m,10m")
    parser.add_argument("--out", default=os.path.join(REPO_ROOT, "workdir", "bench",
                                                      "results.json"))
    parser.add_argument("--quick", action="store_true",
                        help="ml-100k only, few repeats (about 2 minutes)")
    parser.add_argument("--parts", default="train,eval,encoder,teacher_step,serving,mesh")
    parser.add_argument("--models", default=",".join(STUDENTS))
    parser.add_argument("--repeats", type=int, default=0, help="0: 5, or 3 with --quick")
    parser.add_argument("--max_steps", type=int, default=400,
                        help="an epoch longer than this is timed over this many steps")
    parser.add_argument("--data_dir", default=os.path.join(REPO_ROOT, "data"))
    parser.add_argument("--no_tf", action="store_true", help="never prepare data through TFDS")
    parser.add_argument("--config", default="",
                        help="config file[:arg] for model settings (default configs.common."
                             "base_config()); its data.split is used for ml100k")
    parser.add_argument("--prepared", default="",
                        help="a prepared ml-100k folder (arrays.npz) to read as is, without "
                             "raw files or TF (config.data.prepared)")
    parser.add_argument("--bert_path", default="")
    parser.add_argument("--teacher_freeze", default="")
    parser.add_argument("--dtype", default="",
                        help="config.dtype: compute dtype of every model (float32 | bfloat16)")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    config.data.data_dir = args.data_dir
    if args.prepared:
        config.data.prepared = args.prepared
    if args.bert_path:
        config.teacher.bert_path = args.bert_path
    if args.teacher_freeze:
        config.teacher.freeze = args.teacher_freeze
    if args.dtype:
        config.dtype = args.dtype
    tf_ok = _has_tf() and not args.no_tf
    repeats = args.repeats or (3 if args.quick else 5)
    sizes = ["ml100k"] if args.quick else [s for s in args.sizes.split(",") if s]
    parts = set(args.parts.split(","))
    models = [m for m in args.models.split(",") if m]
    res: dict = {"machine": machine_info(), "args": vars(args), "repeats": repeats}
    print(f"machine: {machine_line(res['machine'])}", flush=True)
    t_all = time.time()

    res["part_seconds"] = {}
    clock = {"part": None, "t": time.time()}

    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)

    def mark(part):
        """Ends the running part: records its time and saves what is known so far
        (a run stopped by a timeout still leaves the finished parts)."""
        if clock["part"]:
            res["part_seconds"][clock["part"]] = time.time() - clock["t"]
            with open(out + ".tmp", "w") as f:
                json.dump(res, f, indent=1, default=float)
            os.replace(out + ".tmp", out)
        clock.update(part=part, t=time.time())

    data_cache: dict = {}

    def get_data(label):
        if label not in data_cache:
            ds, info = load_size(label, args.data_dir, allow_prepare=tf_ok,
                                 prepared=args.prepared)
            # Synthetic sizes: the ratio split; ml-100k: the config's split.
            split = config.data.split if label == "ml100k" else "ratio"
            data, side, split_s = split_data(ds, split, config.seed)
            info.update(interactions=int(ds.num_interactions), users=ds.num_users,
                        items=ds.num_items, split=split, split_seconds=split_s)
            data_cache[label] = (data, side, info)
        return data_cache[label]

    side_cache: dict = {}

    def side_fn(names, cfg=None):
        """ml-100k side tables incl. the teacher's text tables (run.build_side)."""
        cfg = cfg or config
        key = (tuple(sorted(names)), cfg.teacher.freeze)
        if key not in side_cache:
            from rec_jax.train import run as run_lib
            data, _, _ = get_data("ml100k")
            side_cache[key] = run_lib.build_side(cfg, data, names)
        return side_cache[key]

    mark("train")
    if "train" in parts:
        res["train"] = {}
        for label in sizes:
            try:
                data, side, info = get_data(label)
            except (FileNotFoundError, ImportError) as e:
                print(f"[train] {label}: skipped ({e})", flush=True)
                continue
            entry = {"data": info, "models": {}}
            runs = [(name, "pmap") for name in models]
            if "mf" in models and not args.quick:
                runs.append(("mf", "mesh"))  # the jit path mesh mode adds, for comparison
            for name, mode in runs:
                t = time.time()
                try:
                    r = train_throughput(name, config, data, side, args.max_steps, repeats,
                                         "" if tf_ok else "numpy", mode=mode)
                except Exception as e:  # noqa: BLE001 - e.g. out of memory at 10M
                    r = {"model": name, "error": f"{type(e).__name__}: {str(e)[:200]}"}
                r["bench_seconds"] = time.time() - t
                entry["models"][name if mode == "pmap" else f"{name}_mesh"] = r
                print(f"[train] {label} {r['model']}: " + (
                    f"{r['examples_per_s']:,.0f} ex/s, {r['epoch_s']:.2f} s/epoch"
                    f"{'' if r['epoch_measured'] else ' (extrapolated)'}"
                    if "error" not in r else r["error"]), flush=True)
            res["train"][label] = entry
            res["memory_after_" + label] = memory_snapshot()
            if label not in ("ml100k",):
                data_cache.pop(label, None)  # Free big datasets before the next size.
        growth = {}
        keys = list(models) + (["mf_mesh"] if "mf" in models and not args.quick else [])
        for name in keys:
            pts = [(e["data"]["interactions"], e["models"][name].get("epoch_s"))
                   for lbl, e in res["train"].items()
                   if SIZES.get(lbl) and name in e["models"]]
            growth[name] = growth_exponent(pts)
        res["epoch_growth"] = growth
        if "ml100k" in res["train"] and "mf" in models:
            data, side, _ = get_data("ml100k")
            res["mf_profile"] = mf_profile(config, data, side, repeats, args.quick)
            print(f"[train] mf profile: {json.dumps(res['mf_profile'], default=float)[:400]}",
                  flush=True)

    mark("eval")
    if "eval" in parts:
        data, side, _ = get_data("ml100k")
        res["eval"] = eval_throughput(config, data, side, max(repeats, 5),
                                      ("mf",) if args.quick else tuple(models))
        print("[eval] " + ", ".join(f"{k}: {v['seconds']:.4f} s" for k, v in res["eval"].items()),
              flush=True)

    mark("encoder")
    if "encoder" in parts:
        try:
            res["encoder"] = encoder_bench(args.quick, 1 if args.quick else 3,
                                           args.bert_path or None)
            print(f"[encoder] {json.dumps(res['encoder'], default=float)[:300]}", flush=True)
        except FileNotFoundError as e:
            print(f"[encoder] skipped ({e})", flush=True)

    mark("teacher_step")
    if "teacher_step" in parts:
        try:
            data, _, _ = get_data("ml100k")
            res["teacher_step"] = teacher_step_bench(config, data, side_fn, 2 if args.quick else 5,
                                                     steps=2 if args.quick else 10)
            print(f"[teacher_step] {json.dumps(res['teacher_step'], default=float)}", flush=True)
        except FileNotFoundError as e:
            print(f"[teacher_step] skipped ({e})", flush=True)

    mark("serving")
    if "serving" in parts:
        try:
            data, _, _ = get_data("ml100k")
            res["serving"] = serving_bench(config, data, side_fn, 10 if args.quick else 30)
            print(f"[serving] {json.dumps(res['serving'], default=float)}", flush=True)
        except FileNotFoundError as e:
            print(f"[serving] skipped ({e})", flush=True)

    mark("mesh")
    if "mesh" in parts:
        res["mesh_memory"] = mesh_memory()

    mark(None)
    res["memory"] = memory_snapshot()
    res["targets"] = evaluate_targets(res)
    res["machine"]["load_average_end"] = load_average()
    res["bench_seconds"] = time.time() - t_all
    png = plot_epochs(res, os.path.splitext(out)[0] + "_epoch.png")
    if png:
        res["plot"] = png
    with open(out + ".tmp", "w") as f:
        json.dump(res, f, indent=1, default=float)
    os.replace(out + ".tmp", out)
    print("\n" + markdown(res), flush=True)
    print(f"\nwrote {out}" + (f" and {png}" if png else "")
          + f" ({res['bench_seconds']:.0f} s)", flush=True)
    return res


if __name__ == "__main__":
    main()
