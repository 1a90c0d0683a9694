"""Student training throughput through the real step and the real pipeline.

Examples/s of MF, SASRec and DeepFM as ``trainer.fit`` runs them
(``recipes.model_spec`` + ``make_pmapped_step`` + ``TrainPipeline``, metric
sums added on device), per data size; the same with the mesh-mode step for
comparison; and for MF on ml-100k a profile that splits the step time into
batch building, host->device transfer, the step itself and the metric sums,
and compares the input engines, several steps per call
(:mod:`rec_jax.bench.multistep`) and ``trainer.fit`` end to end.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import statistics
import tempfile
import time
from typing import Any

import jax
import numpy as np

from rec_jax.bench import multistep
from rec_jax.bench.data import SIZES, Workload, has_tf
from rec_jax.bench.machine import median_ms, memory_snapshot


@dataclasses.dataclass
class _Training:
    """A model's spec, pipeline and replicated state, ready to step."""

    spec: Any
    cfg: Any
    pipe: Any
    tx: Any
    state: Any
    side: Any  # replicated
    frozen: Any  # replicated
    key: jax.Array
    num_params: int


def _setup(name: str, config, data, side, engine: str, seed: int = 0) -> _Training:
    from rec_jax import recipes
    from rec_jax.data.pipeline import TrainPipeline
    from rec_jax.train import optim
    from rec_jax.train import step as step_lib
    spec = recipes.model_spec(name, config, data, side)
    cfg = recipes.model_config(config, name)
    pipe = TrainPipeline(spec.source, cfg.train.batch_size_per_device, seed,
                         engine=engine or cfg.train.get("input_engine", "auto"))
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    params = spec.init(init_key)
    tx = optim.make_optimizer(cfg.optim, 10 * pipe.steps_per_epoch, params, spec.label_fn)
    return _Training(spec, cfg, pipe, tx, step_lib.replicate(step_lib.init_state(params, tx)),
                     step_lib.replicate(side), step_lib.replicate(spec.frozen), step_key,
                     recipes.num_params(params))


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
    from rec_jax import sharding
    from rec_jax.train import step as step_lib
    from rec_jax.train.mesh import make_mesh_step
    t = _setup(name, config, data, side, engine)
    pipe, state, side_r, frozen_r, key = t.pipe, t.state, t.side, t.frozen, t.key
    k = steps_per_call
    if mode == "mesh":
        if k != 1:
            raise ValueError("mesh mode runs one step per call")
        mesh = sharding.make_mesh()
        state = step_lib.unreplicate(state)
        shardings = sharding.tree_shardings(state, mesh, data.num_items)
        side_shardings = sharding.tree_shardings(side, mesh, data.num_items)
        state = jax.device_put(state, shardings)
        side_r, frozen_r = jax.device_put(side, side_shardings), t.spec.frozen
        p_step = make_mesh_step(t.spec.loss_fn, t.tx, mesh, shardings, side_shardings)

        def batches_for(a, b):
            return pipe.mesh_batches(a, b, sharding.batch_sharding(mesh))

        def first(x):
            return np.asarray(jax.device_get(x))
    else:
        if k > 1:
            p_step = multistep.make_pmapped_multi_step(t.spec.loss_fn, t.tx)

            def batches_for(a, b):
                return multistep.device_batches(pipe, a, b, k)
        else:
            p_step = step_lib.make_pmapped_step(t.spec.loss_fn, t.tx)
            batches_for = pipe.device_batches

        def first(x):
            return np.asarray(jax.device_get(x))[0]
    spe = pipe.steps_per_epoch
    # Warm-up: compile, then time 2 calls to size the timed segments.
    clock = time.perf_counter()
    for batch in batches_for(0, k):
        state, sums = p_step(state, batch, side_r, frozen_r, key)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - clock
    clock = time.perf_counter()
    for batch in batches_for(k, 3 * k):
        state, sums = p_step(state, batch, side_r, frozen_r, key)
    jax.block_until_ready(state)
    probe_step_s = (time.perf_counter() - clock) / (2 * k)
    steps = min(spe, max_steps, max(10, int(budget_s / max(probe_step_s, 1e-6))))
    steps = max(k, steps // k * k)
    start = 3 * k
    batches = batches_for(start, start + steps * repeats)
    times, cpu_times = [], []
    for _ in range(repeats):
        clock, cpu = time.perf_counter(), time.process_time()
        acc = None
        for _ in range(steps // k):
            state, sums = p_step(state, next(batches), side_r, frozen_r, key)
            acc = _add(acc, sums)
        jax.block_until_ready((state, acc))
        times.append(time.perf_counter() - clock)
        cpu_times.append(time.process_time() - cpu)
    loss = float(first(acc["loss"]) / max(float(first(acc["examples"])), 1.0))
    med = statistics.median(times)
    label = name if mode == "pmap" else f"{name} (mesh)"
    return {"model": label, "mode": mode, "engine": pipe.engine, "steps_per_call": k,
            "num_params": t.num_params, "global_batch": pipe.global_batch,
            "steps_per_epoch": spe, "timed_steps": steps,
            "train_examples": spe * pipe.global_batch, "compile_s": compile_s,
            "seconds": times, "examples_per_s": steps * pipe.global_batch / med,
            # Process CPU time (all threads): steadier than wall time on a shared machine.
            "examples_per_cpu_s": steps * pipe.global_batch / statistics.median(cpu_times),
            "step_ms": 1000 * med / steps, "epoch_s": med * spe / steps,
            "epoch_cpu_s": statistics.median(cpu_times) * spe / steps,
            "epoch_measured": steps == spe, "loss": loss}


def mf_profile(config, data, side, repeats: int, quick: bool) -> dict:
    """Where an MF step's time goes on this machine (ml-100k, one epoch)."""
    from rec_jax.sharding import device_sharding
    from rec_jax.train import step as step_lib
    out: dict = {}
    t = _setup("mf", config, data, side, "numpy")
    pipe, key = t.pipe, t.key
    spe = pipe.steps_per_epoch
    host = [pipe.host_batch(s) for s in range(spe)]
    out["build_batch_ms"] = median_ms(lambda: [pipe.host_batch(s) for s in range(spe)],
                                      repeats) / spe
    placement = device_sharding()

    def put():
        return [jax.tree.map(lambda x: jax.device_put(x, placement), b) for b in host]
    placed = put()
    out["host_to_device_ms"] = median_ms(put, repeats) / spe
    p_step = step_lib.make_pmapped_step(t.spec.loss_fn, t.tx)
    holder = {"state": t.state}

    def run_steps(accumulate: bool):
        def go():
            acc, st = None, holder["state"]
            for b in placed:
                st, sums = p_step(st, b, t.side, t.frozen, key)
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
    one = jax.jit(functools.partial(step_lib.global_train_step, loss_fn=t.spec.loss_fn, tx=t.tx),
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
        if engine == "tf" and (quick or not has_tf()):
            continue
        r = train_throughput("mf", config, data, side, spe, repeats, engine, k)
        variants[label] = {"examples_per_s": r["examples_per_s"], "epoch_s": r["epoch_s"]}
    out["variants"] = variants
    if not quick:
        out["trainer_fit"] = trainer_fit_throughput(config, data, side)
    return out


def trainer_fit_throughput(config, data, side, epochs: int = 3) -> dict:
    """trainer.fit end to end (validation + checkpoint every epoch), for reference."""
    from rec_jax import recipes
    from rec_jax.eval.evaluator import Evaluator
    from rec_jax.train import trainer
    spec = recipes.model_spec("mf", config, data, side)
    cfg = copy.deepcopy(recipes.model_config(config, "mf"))  # the shared config stays as is
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


def growth_exponent(points: list[tuple[int, float]]) -> float | None:
    """Slope of log(epoch time) vs log(size) between the smallest and largest size."""
    pts = sorted(p for p in points if p[1] and p[1] > 0)
    if len(pts) < 2:
        return None
    (n0, t0), (n1, t1) = pts[0], pts[-1]
    return math.log(t1 / t0) / math.log(n1 / n0)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A student timed again under config overrides, as its own row (``label``)."""

    label: str
    model: str
    overrides: tuple  # ((dotted config key, value), ...)
    title: str = ""  # what the row's model column adds, e.g. "sparse tables"


def sparse_variant(model: str) -> Variant:
    """``model`` with ``config.model.<model>.optim.sparse_tables`` on: row ``<model>_sparse``."""
    return Variant(f"{model}_sparse", model, ((f"model.{model}.optim.sparse_tables", True),),
                   "sparse tables")


def parse_variant(text: str) -> Variant:
    """``LABEL=MODEL:key=value[,key=value...]`` (keys are dotted config paths)."""
    label, eq, rest = text.partition("=")
    model, colon, pairs = rest.partition(":")
    items = [p.partition("=") for p in pairs.split(",") if p]
    if not (eq and colon and label and model and items and all(e and k for k, e, _ in items)):
        raise ValueError(f"--variant {text!r}: use LABEL=MODEL:key=value[,key=value...]")
    return Variant(label, model, tuple((k, v) for k, _, v in items),
                   ", ".join(f"{k.split('.')[-1]}={v}" for k, _, v in items))


def _coerce(old, value):
    """A command-line string as the type of the config value it replaces."""
    if not isinstance(value, str) or isinstance(old, str):
        return value
    if isinstance(old, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{value!r} is not a boolean")
        return value.lower() in ("true", "1")
    return type(old)(value)


def with_overrides(config, overrides):
    """A copy of the config with dotted ``(key, value)`` overrides; an unknown key raises."""
    config = copy.deepcopy(config)
    for key, value in overrides:
        *parents, last = key.split(".")
        node = config
        for part in parents:
            if part not in node:
                raise KeyError(f"config.{key}: no key {part!r}")
            node = node[part]
        if last not in node:
            raise KeyError(f"config.{key}: no key {last!r}")
        node[last] = _coerce(node[last], value)
    return config


def part(workload: Workload, config, sizes, models, max_steps: int, repeats: int,
         quick: bool, engine: str, variants: tuple = ()) -> dict:
    """The ``train`` part: every model at every size, the growth of epoch time, the MF profile.

    Args:
      variants: students timed again under config overrides (:class:`Variant`;
        e.g. ``sparse_variant("mf")``: lazy Adam on the rows a step reads).

    Returns:
      The results' ``train`` (size label -> data info and per-model figures),
      ``memory_after_<size>``, ``epoch_growth`` (and ``_cpu``: exponent per row),
      ``row_family`` (row -> student) and ``mf_profile`` entries.
    """
    res: dict = {"train": {}}
    # Besides pmap (what the trainer runs), MF through the mesh-mode jit path.
    with_mesh = "mf" in models and not quick
    runs = ([(name, name, "pmap", config, "") for name in models]
            + with_mesh * [("mf_mesh", "mf", "mesh", config, "")]
            + [(v.label, v.model, "pmap", with_overrides(config, v.overrides), v.title)
               for v in variants])
    for label in sizes:
        try:
            data, side, info = workload.get(label)
        except (FileNotFoundError, ImportError) as e:
            print(f"[train] {label}: skipped ({e})", flush=True)
            continue
        entry = {"data": info, "models": {}}
        for key, name, mode, run_config, title in runs:
            clock = time.time()
            try:
                r = train_throughput(name, run_config, data, side, max_steps, repeats, engine,
                                     mode=mode)
                if title:
                    r["model"] += f" ({title})"
            except Exception as e:  # noqa: BLE001 - e.g. out of memory at 10M
                r = {"model": name, "error": f"{type(e).__name__}: {str(e)[:200]}"}
            r["bench_seconds"] = time.time() - clock
            entry["models"][key] = r
            print(f"[train] {label} {r['model']}: " + (
                f"{r['examples_per_s']:,.0f} ex/s, {r['epoch_s']:.2f} s/epoch"
                f"{'' if r['epoch_measured'] else ' (extrapolated)'}"
                if "error" not in r else r["error"]), flush=True)
        res["train"][label] = entry
        res["memory_after_" + label] = memory_snapshot()
        if label != "ml100k":
            workload.drop(label)  # Free big datasets before the next size.
    res["row_family"] = {key: name for key, name, *_ in runs}
    timed = list(res["row_family"])
    for key, figure in (("epoch_growth", "epoch_s"), ("epoch_growth_cpu", "epoch_cpu_s")):
        # Wall time is what a user waits; process CPU time (all threads) is
        # steadier on a shared machine, so both growths are kept.
        res[key] = {
            name: growth_exponent([(e["data"]["interactions"], e["models"][name].get(figure))
                                   for lbl, e in res["train"].items()
                                   if SIZES.get(lbl) and name in e["models"]])
            for name in timed}
    if "ml100k" in res["train"] and "mf" in models:
        data, side, _ = workload.get("ml100k")
        res["mf_profile"] = mf_profile(config, data, side, repeats, quick)
        print(f"[train] mf profile: {json.dumps(res['mf_profile'], default=float)[:400]}",
              flush=True)
    return res
