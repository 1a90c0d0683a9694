"""Training input pipeline: deterministic, sharded per process, prefetched.

Batches are a pure function of (seed, step):

* the epoch's example order is a permutation drawn from (seed, epoch), so a
  resumed run sees exactly the batches an uninterrupted run would;
* random parts of a batch (negative items) are drawn from (seed, step) for
  the whole *global* batch, and each process keeps its slice, so 2 processes
  with 2 devices each see the same examples and negatives as 1 process with 4
  devices;
* a process's slice is shaped ``[local_devices, per_device_batch, ...]`` for
  ``jax.pmap``, one step per item (``device_batches``);
* mesh mode (``mesh_batches``) places the flat global batch
  ``[global_batch, ...]`` sharded on the mesh's "data" axis; each process
  keeps and places only the rows its own devices hold (with the data axis
  across hosts, process p of P feeds rows ``[p * B / P, (p + 1) * B / P)``).

Two interchangeable engines produce the same batches: ``tf`` (tf.data:
parallel map and prefetch) and ``numpy`` (a background thread), the latter for
machines without TensorFlow. Both end in a small device-prefetch queue.
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import Iterator, Protocol

import jax
import numpy as np

from rec_jax.sharding import device_sharding, process_rows

Batch = dict[str, np.ndarray]


class ExampleSource(Protocol):
    """What a model trains on: a count of examples and a batch builder."""

    num_examples: int

    def make_batch(self, example_ids: np.ndarray, rng: np.random.Generator) -> Batch:
        """Builds the batch of the given example ids; randomness only from rng."""


# ---------------------------------------------------------------------------
# The pipeline.
# ---------------------------------------------------------------------------


class TrainPipeline:
    """Deterministic batches for global steps, sliced for this process.

    Args:
      source: the example source.
      per_device_batch: examples per device per step.
      seed: data seed.
      engine: "tf", "numpy" or "auto" (tf when TensorFlow imports).
      prefetch: batches kept ready on the host and on device.
    """

    def __init__(self, source: ExampleSource, per_device_batch: int, seed: int,
                 engine: str = "auto", prefetch: int = 2):
        self.source = source
        self.seed = seed
        self.per_device_batch = per_device_batch
        self.local_devices = jax.local_device_count()
        self.global_batch = per_device_batch * jax.device_count()
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.steps_per_epoch = source.num_examples // self.global_batch
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"global batch {self.global_batch} (per-device {per_device_batch} x "
                f"{jax.device_count()} devices) exceeds the {source.num_examples} training "
                "examples; lower the batch size")
        self.engine = _resolve_engine(engine)
        self.prefetch = prefetch
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm_cache = (epoch, rng.permutation(self.source.num_examples))
        return self._perm_cache[1]

    def global_batch_ids(self, step: int) -> np.ndarray:
        epoch, b = divmod(step, self.steps_per_epoch)
        # The tail of each epoch that does not fill a global batch is dropped;
        # a fresh permutation next epoch gives those examples their turn.
        return self.epoch_order(epoch)[b * self.global_batch:(b + 1) * self.global_batch]

    def global_host_batch(self, step: int) -> Batch:
        """The whole global batch of step `step`, flat: [global_batch, ...]."""
        # The whole global batch is built on every process with the same RNG,
        # so the draws do not depend on the process layout; it is small.
        return self.source.make_batch(self.global_batch_ids(step),
                                      np.random.default_rng([self.seed, 1, step]))

    def host_batch(self, step: int) -> Batch:
        """This process's part of global step `step`: [local_devices, per_device, ...]."""
        batch = self.global_host_batch(step)
        local = self.per_device_batch * self.local_devices
        lo = self.process_index * local
        return {k: v[lo:lo + local].reshape((self.local_devices, self.per_device_batch)
                                            + v.shape[1:]) for k, v in batch.items()}

    def host_batches(self, start: int, stop: int) -> Iterator[Batch]:
        """Host batches (`host_batch`) for steps [start, stop), built ahead by the engine."""
        if self.engine == "tf":
            return _tf_batches(self, start, stop)
        return _threaded(lambda: (self.host_batch(s) for s in range(start, stop)),
                         self.prefetch)

    def device_batches(self, start: int, stop: int) -> Iterator[Batch]:
        """Batches for steps [start, stop), already placed on the local devices."""
        return prefetch_to_devices(self.host_batches(start, stop), self.prefetch)

    def process_batch(self, step: int, rows: slice) -> Batch:
        """Rows `rows` of global step `step`'s flat batch: [rows, ...] (mesh mode)."""
        # Built from the whole global batch, as for pmap: its negatives are
        # drawn for all rows at once, so a row's draws depend on the global
        # batch alone, never on how the processes split it.
        return {k: v[rows] for k, v in self.global_host_batch(step).items()}

    def mesh_batches(self, start: int, stop: int, sharding) -> Iterator[Batch]:
        """Global batches for mesh mode: flat [global_batch, ...] arrays with `sharding`.

        Each process keeps the rows its addressable devices hold
        (``rec_jax.sharding.process_rows``) and places only those; together the
        processes feed exactly the global batch a single process would.

        Args:
          sharding: the batch sharding, e.g. ``rec_jax.train.mesh.batch_sharding(mesh)``
            (rows split on "data", repeated along "model").
        """
        rows = process_rows(sharding, self.global_batch)

        def cut(local, index):
            # index: a device's block of the global array (rows split only);
            # `local` holds global rows [rows.start, rows.stop).
            block = range(self.global_batch)[index[0]]
            return local[block.start - rows.start:block.stop - rows.start]

        def place(batch):
            return {k: jax.make_array_from_callback((self.global_batch,) + v.shape[1:], sharding,
                                                    lambda index, v=v: cut(v, index))
                    for k, v in batch.items()}

        host = _threaded(lambda: (self.process_batch(s, rows) for s in range(start, stop)),
                         self.prefetch)
        buffer: collections.deque = collections.deque()
        for batch in host:
            buffer.append(place(batch))
            if len(buffer) > self.prefetch:
                yield buffer.popleft()
        while buffer:
            yield buffer.popleft()


def _resolve_engine(engine: str) -> str:
    if engine not in ("auto", "tf", "numpy"):
        raise ValueError(f"unknown input engine {engine!r}: use 'auto', 'tf' or 'numpy'")
    if engine == "auto":
        try:
            import tensorflow  # noqa: F401
            return "tf"
        except ImportError:
            return "numpy"
    return engine


def _tf_batches(pipe: TrainPipeline, start: int, stop: int) -> Iterator[Batch]:
    import tensorflow as tf
    example = pipe.host_batch(start)
    keys = sorted(example)

    def build(step):
        batch = pipe.host_batch(int(step))
        return [batch[k] for k in keys]

    def to_tensors(step):
        flat = tf.numpy_function(build, [step], [tf.as_dtype(example[k].dtype) for k in keys],
                                 stateful=False)
        return {k: tf.ensure_shape(t, example[k].shape) for k, t in zip(keys, flat)}

    ds = tf.data.Dataset.range(start, stop)
    # deterministic=True keeps step order even with parallel map workers.
    ds = ds.map(to_tensors, num_parallel_calls=2, deterministic=True).prefetch(pipe.prefetch)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 2
    ds = ds.with_options(options)
    return ds.as_numpy_iterator()


def _threaded(make_iter, size: int) -> Iterator:
    """Runs an iterator in a background thread with a bounded queue."""
    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    done = object()

    def work():
        try:
            for item in make_iter():
                q.put(item)
            q.put(done)
        except BaseException as e:  # Surface producer errors in the consumer.
            q.put(e)

    threading.Thread(target=work, daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def prefetch_to_devices(batches: Iterator[Batch], size: int = 2) -> Iterator[Batch]:
    """Keeps `size` batches in flight to the local devices."""
    sharding = device_sharding()
    buffer: collections.deque = collections.deque()

    def put(batch):
        return jax.tree.map(lambda x: jax.device_put(x, sharding), batch)

    for batch in batches:
        buffer.append(put(batch))
        if len(buffer) > size:
            yield buffer.popleft()
    while buffer:
        yield buffer.popleft()
