"""Several train steps per pmap call, the variant the benchmark compares against one.

The trainer makes one pmapped call per step. When a step takes well under a
millisecond (MF on a CPU), the per-call dispatch and host work show, so the
benchmark also times k steps per call: a ``lax.scan`` of the library's own
:func:`rec_jax.train.step.train_step` over k consecutive batches stacked as
``[local_devices, k, per_device_batch, ...]``, cut from
``TrainPipeline.host_batches``. It gives the same result as k single steps
(same batches, same per-step keys; ``tests/test_mesh.py`` checks it).
"""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np
import optax

from rec_jax.data.pipeline import Batch, TrainPipeline, prefetch_to_devices
from rec_jax.sharding import BATCH
from rec_jax.spec import LossFn
from rec_jax.train import step as step_lib


def make_pmapped_multi_step(loss_fn: LossFn, tx: optax.GradientTransformation):
    """Several steps per call: (state, stacked, side, frozen, key) -> (state, sums).

    `stacked` holds n consecutive steps' batches, shaped
    ``[local_devices, n, per_device_batch, ...]`` (see `device_batches`); a
    ``lax.scan`` runs ``train_step`` on each in order, so the result equals n
    calls of the one-step function. Returned sums are added over the n
    steps. The number of steps is the batch's leading dimension after the
    device axis: each distinct n compiles once.
    """
    def steps(state, stacked, side, frozen, key):
        def body(carry, batch):
            return step_lib.train_step(carry, batch, side, frozen, key, loss_fn=loss_fn, tx=tx)
        state, sums = jax.lax.scan(body, state, stacked)
        return state, jax.tree.map(lambda x: x.sum(0), sums)
    # Donate the state as the one-step function does (not on CPU, where it is slower).
    return jax.pmap(steps, axis_name=BATCH, in_axes=(0, 0, 0, 0, None),
                    donate_argnums=step_lib.donated_state_args())


def chunk_lengths(start: int, stop: int, steps_per_call: int,
                  align: tuple[int, ...] = ()) -> list[int]:
    """Step counts of the chunks [start, stop) is cut into for a multi-step call.

    Each chunk has at most `steps_per_call` steps and ends at `stop` and at
    every multiple of a value in `align` (log / eval / checkpoint intervals),
    so a loop that acts at those steps sees them as chunk ends: a run resumed
    at step 437 with steps_per_call=8 and align=(50,) gets chunks of 8 and 5
    (ending at 450), then 8, 8, ... with a short one ending at 500, and so on.

    Example: chunk_lengths(0, 10, 4) == [4, 4, 2];
    chunk_lengths(3, 12, 4, align=(5,)) == [2, 4, 1, 2].
    """
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    align = tuple(a for a in align if a and a > 0)
    lengths, step = [], start
    while step < stop:
        end = min(stop, step + steps_per_call)
        for a in align:
            end = min(end, (step // a + 1) * a)
        lengths.append(end - step)
        step = end
    return lengths


def stack_steps(batches: Iterator[Batch], lengths: list[int]) -> Iterator[Batch]:
    """Groups [devices, per_device, ...] batches into [devices, n, per_device, ...] chunks."""
    batches = iter(batches)
    for n in lengths:
        group = [next(batches) for _ in range(n)]
        yield {k: np.stack([b[k] for b in group], axis=1) for k in group[0]}


def device_batches(pipe: TrainPipeline, start: int, stop: int, steps_per_call: int,
                   align: tuple[int, ...] = ()) -> Iterator[Batch]:
    """Stacked batches for steps [start, stop), placed on the local devices.

    Yields ``[local_devices, n, per_device, ...]`` chunks (n <= steps_per_call,
    cut by `chunk_lengths`) for :func:`make_pmapped_multi_step`.
    """
    lengths = chunk_lengths(start, stop, steps_per_call, align)
    return prefetch_to_devices(stack_steps(pipe.host_batches(start, stop), lengths),
                               pipe.prefetch)
