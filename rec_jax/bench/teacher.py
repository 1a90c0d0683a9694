"""The teacher's train step: time, XLA FLOPs, achieved FLOP/s and fraction of peak.

Runs the step as the main job trains it (``--teacher_freeze`` and
``--dtype`` set the config), on one device's share of the global batch, so
that its FLOP/s compares with the device's dense bf16 peak (GPUs with a
known peak: :data:`rec_jax.bench.machine.PEAK_BF16_FLOPS`).
"""

from __future__ import annotations

import functools
import json
import time

import jax
import numpy as np

from rec_jax.bench.machine import cost_flops, median_ms, peak_flops


def teacher_step_bench(config, data, side, repeats: int, steps: int = 10) -> dict:
    """Times `steps` teacher steps (median of `repeats` passes) and reads XLA's FLOPs.

    Args:
      side: the side tables with the teacher's text tables.
    """
    from rec_jax import recipes
    from rec_jax.data.pipeline import TrainPipeline
    from rec_jax.train import optim
    from rec_jax.train import step as step_lib
    spec = recipes.model_spec("teacher", config, data, side)
    cfg = config.teacher
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


def part(workload, config, quick: bool) -> dict:
    """The ``teacher_step`` part on ml-100k: results' ``teacher_step`` entry."""
    data, _, _ = workload.get("ml100k")
    out = teacher_step_bench(config, data, workload.side(["teacher"]), 2 if quick else 5,
                             steps=2 if quick else 10)
    print(f"[teacher_step] {json.dumps(out, default=float)}", flush=True)
    return {"teacher_step": out}
