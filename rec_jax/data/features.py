"""Per-user and per-item feature tables ("side"), as integer codes and arrays.

These are the fields that CTR students read (user, item, age,
gender, occupation, genres, year) in a form an embedding layer can take. They
travel into jitted functions as arguments (a pytree of arrays).
"""

from __future__ import annotations

import numpy as np

from rec_jax.data.dataset import Dataset

AGE_BUCKETS = (18, 25, 35, 45, 50, 56)  # ml-1m's age groups, applied to raw ages too
YEAR_BUCKETS = (1950, 1960, 1970, 1980, 1985, 1990, 1993, 1995, 1996, 1997)


def field_vocab(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes for a string column: (codes int32, vocabulary sorted)."""
    vocab = sorted(set(values.tolist()))
    index = {v: k for k, v in enumerate(vocab)}
    return np.array([index[v] for v in values], np.int32), vocab


def side_features(dataset: Dataset, train_items: np.ndarray | None = None
                  ) -> dict[str, np.ndarray]:
    """Categorical codes per user and item, plus sizes of each vocabulary.

    Returns:
      {"user_age": [U], "user_gender": [U], "user_occupation": [U],
       "item_year": [I], "item_genres": [I, G] float32} (int32 codes, 0-based),
      plus "item_seen": [I] bool (has a training interaction) when the
      training items are given.
    """
    gender, _ = field_vocab(dataset.user_gender)
    occupation, _ = field_vocab(dataset.user_occupation)
    age = np.digitize(dataset.user_age, AGE_BUCKETS).astype(np.int32)
    # Unknown years (0) get their own bucket 0; known years start at 1.
    year = np.where(dataset.item_year > 0, 1 + np.digitize(dataset.item_year, YEAR_BUCKETS), 0)
    side = {
        "user_age": age, "user_gender": gender, "user_occupation": occupation,
        "item_year": year.astype(np.int32),
        "item_genres": dataset.item_genres.astype(np.float32),
    }
    if train_items is not None:
        side["item_seen"] = np.bincount(train_items, minlength=dataset.num_items) > 0
    return side


def vocab_sizes(side: dict[str, np.ndarray]) -> dict[str, int]:
    """Embedding table sizes for the categorical fields of `side`."""
    return {k: int(v.max()) + 1 if v.size else 1 for k, v in side.items()
            if v.dtype == np.int32 and v.ndim == 1}
