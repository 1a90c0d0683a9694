"""The benchmark's data: real ml-100k and synthetic MovieLens sizes, split once each.

Synthetic sizes (``100k``, ``1m``, ``10m``) are written by
:mod:`rec_jax.bench.synthetic` in the ml-1m layout and prepared once, cached
under the data folder with their generation and preparation times (reported
with the training figures). They are prepared by :func:`read_ml1m_arrays`, a
numpy reader that gives the dataset the TFDS builder gives (the same arrays,
tested), because the builder serialises one Python example at a time: 1M
synthetic ratings took 23 minutes through it here, 10M would take hours.
The real ml-100k still goes through TFDS, as every run of the project does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

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
    """The dataset of a size label, generating and preparing it once.

    Args:
      label: a key of `SIZES`.
      data_dir: the data folder (raw files and prepared datasets).
      allow_prepare: whether data may be generated and prepared (ml-100k
        needs TF for it); without it only already prepared ``arrays.npz``
        files are read.
      prepared: for ml-100k, a prepared folder to read as is.

    Returns:
      (dataset, info): info has the generation and preparation seconds of
      the first preparation (kept beside and in the prepared folder) and
      this load's seconds.
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
    # The folder the TFDS path would prepare into: a later TFDS load of the
    # same source finds these arrays (equal to its own) and reuses them.
    folder = dataset_lib.prepared_dir(data_dir, "1m", source)
    arrays = os.path.join(folder, "arrays.npz")
    timing = os.path.join(folder, "prepare_seconds.json")
    if not os.path.exists(arrays):
        if not allow_prepare:
            raise FileNotFoundError(f"{arrays} missing (and preparing is not allowed)")
        t = time.time()
        ds = read_ml1m_arrays(source)
        os.makedirs(folder, exist_ok=True)
        ds.save(arrays)
        with open(timing, "w") as f:
            json.dump({"seconds": time.time() - t, "interactions": int(ds.num_interactions),
                       "how": "numpy ml-1m reader"}, f)
    t = time.time()
    ds = dataset_lib.Dataset.load(arrays)
    info["load_seconds"] = time.time() - t
    if os.path.exists(timing):
        with open(timing) as f:
            prep = json.load(f)
        # Folders prepared before the numpy reader went through TFDS.
        how = prep.get("how", "TFDS")
        info["prepare_how"] = how
        info["prepare_seconds"] = prep["seconds"]
        info["prepare_examples_per_s"] = prep["interactions"] / prep["seconds"]
        if how == "TFDS":
            info["tfds_prepare_seconds"] = prep["seconds"]
            info["tfds_prepare_examples_per_s"] = info["prepare_examples_per_s"]
    return ds, info


def read_ml1m_arrays(source: str):
    """The Dataset the TFDS builder makes of an ml-1m folder, read with numpy.

    ``ratings.dat`` (the only big file) is parsed by ``np.loadtxt``; the side
    files go through :func:`rec_jax.data.raw.read` itself (with the ratings
    left out), so titles, years, genres and profile fields are read exactly as
    the builder reads them. Ids and ratings must be integers written without
    leading zeros, as the synthetic generator writes them; anything else is
    refused (prepare such a folder through TFDS: ``rec_jax.data.dataset.load``).

    Args:
      source: a folder with ratings.dat, movies.dat and users.dat.

    Returns:
      A ``rec_jax.data.dataset.Dataset`` equal, array for array, to the one
      ``rec_jax.data.dataset.load("1m", ..., source)`` returns.
    """
    from rec_jax.data import dataset as dataset_lib
    from rec_jax.data import raw
    ratings_path = os.path.join(source, "ratings.dat")
    # "u::i::r::t" split on ":" has empty fields between the numbers: skip them.
    table = np.loadtxt(ratings_path, delimiter=":", dtype=np.int64, usecols=(0, 2, 4, 6),
                       ndmin=2, encoding="latin-1")
    user_raw, item_raw, rating, timestamp = table.T
    if len(rating) and not ((rating >= 1) & (rating <= 5)).all():
        raise ValueError(f"{ratings_path}: ratings outside 1..5")
    with tempfile.TemporaryDirectory() as side_only:
        for name in ("movies.dat", "users.dat"):
            shutil.copy(os.path.join(source, name), side_only)
        open(os.path.join(side_only, "ratings.dat"), "w").close()
        side = raw.read(side_only)
    items = {_int_id(it.item, "movies.dat"): it for it in side.items}
    users = {_int_id(u.user, "users.dat"): u for u in side.users}
    # Only rated ids enter the dataset, in numeric order (dataset._sorted_ids).
    user_ids, user = np.unique(user_raw, return_inverse=True)
    item_ids, item = np.unique(item_raw, return_inverse=True)
    for ids, known, name in ((user_ids, users, "users.dat"), (item_ids, items, "movies.dat")):
        missing = [int(x) for x in ids if int(x) not in known]
        if missing:
            raise ValueError(f"{ratings_path}: id {missing[0]} is not in {name}")
    pairs = user.astype(np.int64) * len(item_ids) + item
    if len(np.unique(pairs)) != len(pairs):
        raise ValueError(f"{ratings_path}: a (user, item) pair is rated twice")
    order = np.lexsort((item, timestamp, user))  # the builder's canonical row order
    genre_index = {g: k for k, g in enumerate(raw.GENRES)}
    genres = np.zeros((len(item_ids), len(raw.GENRES)), np.bool_)
    for row, i in enumerate(item_ids):
        genres[row, [genre_index[g] for g in items[int(i)].genres]] = True
    item_rec = [items[int(i)] for i in item_ids]
    user_rec = [users[int(u)] for u in user_ids]
    text = lambda values: np.array(list(values))  # noqa: E731  (str arrays, as the builder's)
    return dataset_lib.Dataset(
        name="ml-1m",
        user=user.astype(np.int32)[order], item=item.astype(np.int32)[order],
        rating=rating.astype(np.float32)[order], timestamp=timestamp[order],
        user_ids=text(str(u) for u in user_ids), item_ids=text(str(i) for i in item_ids),
        item_title=text(it.title for it in item_rec),
        item_year=np.array([it.year for it in item_rec], np.int32),
        item_genres=genres,
        user_age=np.array([u.age for u in user_rec], np.int32),
        user_gender=text(u.gender for u in user_rec),
        user_occupation=text(u.occupation for u in user_rec),
        user_zip=text(u.zip_code for u in user_rec))


def _int_id(token: str, name: str) -> int:
    """An id token as an int, refusing spellings the builder would keep apart (``007``)."""
    if not token.isdigit() or str(int(token)) != token:
        raise ValueError(f"{name}: id {token!r} is not a plain integer; prepare this folder "
                         "through TFDS (rec_jax.data.dataset.load)")
    return int(token)


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
