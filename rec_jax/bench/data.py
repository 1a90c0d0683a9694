"""The benchmark's data: real ml-100k and synthetic MovieLens sizes, split once each.

Synthetic sizes (``100k``, ``1m``, ``10m``) are written by
:mod:`rec_jax.bench.synthetic` in the ml-1m layout and prepared through the
TFDS builder once, cached under the data folder with their generation and
preparation times (reported with the training figures).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

# Size label -> synthetic interactions; None: the real ml-100k.
SIZES = {"ml100k": None, "100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}


def has_tf() -> bool:
    """Whether TensorFlow and TFDS import (needed to prepare data, not to read it)."""
    try:
        import tensorflow  # noqa: F401
        import tensorflow_datasets  # noqa: F401
        return True
    except ImportError:
        return False


def synthetic_source(label: str, data_dir: str) -> str:
    """The folder a synthetic size's raw files are generated into."""
    return os.path.join(data_dir, "synthetic", f"ml-syn-{label}")


def load_size(label: str, data_dir: str, allow_prepare: bool,
              prepared: str | None = None) -> tuple[Any, dict]:
    """The dataset of a size label, generating and preparing it through TFDS once.

    Args:
      label: a key of `SIZES`.
      data_dir: the data folder (raw files and prepared datasets).
      allow_prepare: whether data may be generated and prepared (needs TF);
        without it only already prepared ``arrays.npz`` files are read.
      prepared: for ml-100k, a prepared folder to read as is.

    Returns:
      (dataset, info): info has the generation and TFDS preparation seconds
      of the first preparation (kept in the prepared folder) and this load's
      seconds.
    """
    from rec_jax.bench import synthetic
    from rec_jax.data import dataset as dataset_lib
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
    """(split data, side features, seconds the split took) of a dataset."""
    from rec_jax.data import features, interactions, splits
    t = time.time()
    data = interactions.build(ds, splits.make_split(ds, split, seed))
    return data, features.side_features(ds), time.time() - t


class Workload:
    """Split datasets by size label and side tables, each built once per run.

    Args:
      config: the benchmark's config (its data.split and seed apply to ml-100k).
      data_dir: the data folder.
      allow_prepare: see `load_size`.
      prepared: a prepared ml-100k folder to read as is ("" for none).
    """

    def __init__(self, config, data_dir: str, allow_prepare: bool, prepared: str = ""):
        self.config, self.data_dir = config, data_dir
        self.allow_prepare, self.prepared = allow_prepare, prepared
        self._data: dict = {}
        self._side: dict = {}

    def get(self, label: str):
        """(split data, side features, info) of a size label."""
        if label not in self._data:
            ds, info = load_size(label, self.data_dir, self.allow_prepare, self.prepared)
            # Synthetic sizes: the ratio split; ml-100k: the config's split.
            split = self.config.data.split if label == "ml100k" else "ratio"
            data, side, split_s = split_data(ds, split, self.config.seed)
            info.update(interactions=int(ds.num_interactions), users=ds.num_users,
                        items=ds.num_items, split=split, split_seconds=split_s)
            self._data[label] = (data, side, info)
        return self._data[label]

    def drop(self, label: str) -> None:
        """Frees a size's arrays (big synthetic sizes, before the next one)."""
        self._data.pop(label, None)

    def side(self, names, config=None):
        """ml-100k side tables incl. the teacher's text tables (``run.build_side``)."""
        config = config or self.config
        key = (tuple(sorted(names)), config.teacher.freeze)
        if key not in self._side:
            from rec_jax import run as run_lib
            data, _, _ = self.get("ml100k")
            self._side[key] = run_lib.build_side(config, data, names)
        return self._side[key]
