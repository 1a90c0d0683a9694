"""The trainer: one readable loop for every model (teacher and students).

Phases, top to bottom: setup, restore, loop (step, log, evaluate, save),
finish. Model selection is on validation only; the caller reads the test
split once, with the best validation params this returns.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from typing import Any

import jax

from rec_jax import console, errors
from rec_jax.data.pipeline import TrainPipeline
from rec_jax.eval.evaluator import Evaluator
from rec_jax.spec import ModelSpec
from rec_jax.train import optim
from rec_jax.train.checkpoint import Checkpointer
from rec_jax.train.logger import MetricLogger
from rec_jax.train.parallel import PmapLayout
from rec_jax.train.step import init_state


class TrainingInterrupted(SystemExit):
    """Raised after SIGTERM, once the checkpoint is safely written."""


class NonFiniteLoss(errors.NonFiniteError):
    """The loss became NaN/inf; the run stops and keeps its last good checkpoint."""


def resolve_steps(train_cfg, steps_per_epoch: int) -> int:
    """Training length in steps from either `steps` or `epochs` (one helper, one rule)."""
    steps = int(train_cfg.steps or 0)
    epochs = float(train_cfg.epochs or 0)
    if steps and epochs:
        raise errors.ConfigError("set either train.steps or train.epochs, not both")
    if not steps and not epochs:
        raise errors.ConfigError("set train.steps or train.epochs")
    return steps or max(1, int(math.ceil(epochs * steps_per_epoch)))


@dataclasses.dataclass
class FitResult:
    params: Any  # best validation params (host numpy)
    meta: dict  # loop bookkeeping: best step, best metric, history, steps done


def _setup(spec: ModelSpec, cfg, seed: int):
    """What a run starts from: its pipeline, length, optimizer, initial state and step key."""
    tcfg = cfg.train
    pipeline = TrainPipeline(spec.source, tcfg.batch_size_per_device, seed,
                             engine=tcfg.input_engine)
    total_steps = resolve_steps(tcfg, pipeline.steps_per_epoch)
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    params = spec.init(init_key)
    tx = optim.make_optimizer(cfg.optim, total_steps, params, spec.label_fn, spec.freeze_steps)
    return pipeline, total_steps, tx, init_state(params, tx), step_key


def restore_best(spec: ModelSpec, cfg, folder: str, seed: int) -> FitResult:
    """The best validation params of a finished run in `folder`, without training.

    Raises MissingInputError when the folder holds no finished run (export and
    serving never train).
    """
    ckpt = Checkpointer(os.path.join(folder, "ckpt"), keep=cfg.train.keep_checkpoints)
    try:
        if ckpt.latest_step() is None:
            raise errors.MissingInputError(f"no checkpoint in {ckpt.directory}: train "
                                           f"{spec.name!r} first (python -m rec_jax.main)")
        state = _setup(spec, cfg, seed)[3]
        restored, meta = ckpt.restore({"state": state, "best": state.params})
    finally:
        ckpt.close()
    if not meta["done"]:
        raise errors.MissingInputError(f"{ckpt.directory}: {spec.name!r} has not finished "
                                       "training; rerun its job to complete it")
    return FitResult(restored["best"], meta)


def fit(spec: ModelSpec, cfg, side: Any, folder: str, evaluator: Evaluator, seed: int,
        progress: str = "auto", layout=None) -> FitResult:
    """Trains spec's model, resuming from folder/ckpt if a checkpoint exists.

    Args:
      spec: the model.
      cfg: the model's config section with `train` and `optim`.
      side: feature tables (host arrays), passed to every step.
      folder: the model's output folder (checkpoints, logs).
      evaluator: validation evaluator (model selection and early stopping).
      seed: seeds init, data order and step randomness.
      progress: progress display mode (see MetricLogger).
      layout: how the step is laid over devices (rec_jax.train.parallel);
        default pmap. It also decides where the state and best params live
        between steps: host copies (pmap) or the mesh (mesh mode: checkpoints
        written and restored shard by shard by every process).
    """
    # ------------------------------------------------------------------ setup
    tcfg = cfg.train
    pipeline, total_steps, tx, state, step_key = _setup(spec, cfg, seed)
    eval_every = max(1, int(tcfg.eval_every_epochs * pipeline.steps_per_epoch))
    # Early stopping may fire from this step on (train.min_epochs).
    min_stop_step = int(math.ceil(tcfg.get("min_epochs", 0.0) * pipeline.steps_per_epoch))
    best_params = state.params
    meta = {"best_step": -1, "best_metric": -math.inf, "evals_since_best": 0,
            "history": [], "done": False, "stopped_early": False}
    ckpt = Checkpointer(os.path.join(folder, "ckpt"), keep=tcfg.keep_checkpoints)
    layout = layout or PmapLayout()

    # ---------------------------------------------------------------- restore
    # Resume order: (1) the latest checkpoint's state and best params, read
    # straight into the layout's shardings (mesh: each process reads its own
    # devices' shards; pmap: host arrays), (2) its loop metadata, (3) logs
    # truncated to that step; the data position and RNG follow from the step
    # alone.
    start = 0
    resumed = ckpt.latest_step() is not None
    if resumed:
        template = {"state": state, "best": best_params}
        restored, meta = ckpt.restore(template, shardings=layout.restore_shardings(template))
        state, best_params = restored["state"], restored["best"]
        start = int(state.step)
        console.say(f"[{spec.name}] resumed from step {start} ({ckpt.directory})")
    if meta["done"]:
        ckpt.close()
        return FitResult(layout.to_host(best_params), meta)
    logger = MetricLogger(folder, start, total_steps, spec.name, progress)

    # ------------------------------------------------------------------- loop
    step_fn, state_dev, side_dev, frozen_dev = layout.prepare(spec.loss_fn, tx, state, side,
                                                              spec.frozen)
    if not resumed:  # The initial params are the first best params, kept as the layout keeps them.
        best_params = layout.keep(best_params)
    interrupted = _SigtermFlag()
    sums_acc, last_log_step = None, start
    log_every = max(1, tcfg.log_every_steps)
    ckpt_every = tcfg.checkpoint_every_steps or 0
    t_start = time.time()

    def save(step_now):
        ckpt.save(step_now, {"state": layout.saveable(state_dev), "best": best_params}, meta)

    def check_finite(step_now):
        if sums_acc is None:
            return
        if float(jax.device_get(layout.first(sums_acc["nonfinite"]))) > 0:
            good = ckpt.latest_step()
            kept = (f"The last good checkpoint is step {good} in {ckpt.directory}."
                    if good is not None else "No checkpoint was saved before it.")
            raise NonFiniteLoss(
                f"[{spec.name}] NonFiniteLoss: loss became NaN/inf between steps "
                f"{last_log_step} and {step_now}; stopped without saving. {kept} Lower the "
                "learning rate (config.model.*.optim.lr) or check the input data.")

    try:
        step = start
        for batch in layout.batches(pipeline, start, total_steps):
            state_dev, sums = step_fn(state_dev, batch, side_dev, frozen_dev, step_key)
            sums_acc = sums if sums_acc is None else jax.tree.map(lambda a, b: a + b, sums_acc, sums)
            step += 1
            logger.step()

            if step % log_every == 0 or step == total_steps:
                check_finite(step)
                host = jax.device_get(layout.first(sums_acc))
                logger.write(step, _train_scalars(host, step - last_log_step, time.time() - t_start))
                sums_acc, last_log_step, t_start = None, step, time.time()

            if step % eval_every == 0 or step == total_steps:
                check_finite(step)
                params_now = layout.snapshot(state_dev.params)
                result, _ = evaluator.evaluate(spec.score_fn,
                                               layout.eval_params(params_now, evaluator), side,
                                               spec.make_query, keep_recs=False)
                metric = result[tcfg.select_metric]
                meta["history"].append({"step": step, tcfg.select_metric: metric})
                if metric > meta["best_metric"]:
                    meta.update(best_metric=metric, best_step=step, evals_since_best=0)
                    best_params = params_now
                else:
                    meta["evals_since_best"] += 1
                logger.write(step, {k: v for k, v in result.items() if "/" not in k}, kind="valid")
                if meta["evals_since_best"] >= tcfg.patience and step >= min_stop_step:
                    meta["stopped_early"] = True
                    break
                save(step)
            elif ckpt_every and step % ckpt_every == 0:
                check_finite(step)
                save(step)

            if interrupted.set:
                check_finite(step)
                save(step)
                raise TrainingInterrupted(
                    f"[{spec.name}] SIGTERM: checkpoint saved at step {step}; "
                    "rerun the same command to resume")

        # ------------------------------------------------------------- finish
        check_finite(step)
        meta["done"] = True
        meta["steps_done"] = step
        save(step)
    finally:
        interrupted.restore()
        logger.close()
        ckpt.close()
    return FitResult(layout.to_host(best_params), meta)


def _train_scalars(sums: dict, steps: int, seconds: float) -> dict[str, float]:
    count = max(float(sums.get("examples", 1.0)), 1.0)
    out = {k: float(v) / count for k, v in sums.items() if k not in ("examples", "nonfinite")}
    out["examples_per_sec"] = count / seconds if seconds > 0 else 0.0
    out["steps"] = steps
    return out


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop checks at each step boundary."""

    def __init__(self):
        self.set = False
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # Not the main thread: no handler (e.g. a notebook worker).
            self._previous = None

    def _handle(self, signum, frame):
        del signum, frame
        self.set = True

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
