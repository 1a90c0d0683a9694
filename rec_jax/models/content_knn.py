"""Content-KNN: the cold-start baselines that know item content and nothing else.

An item is a unit-length content vector c_i; a user's profile is the mean of
the vectors of their training items, and every item is scored by its cosine
to that profile (up to the profile's norm, a per-user constant that does not
change the ranking):

    score(u, j) = (1 / |I_u|) Σ_{i ∈ I_u} <c_i, c_j>  =  (x_u S)_j / |I_u|,   S = C Cᵀ

Two content views:

* ``knn_text``: c_i = the frozen BERT's mean-pooled vector of the item's text
  (the same sentence the teacher reads), centred on the catalogue mean first
  (raw sentence vectors share a large common direction that would make every
  cosine near 1);
* ``knn_kg``: c_i = TF-IDF over the item's knowledge-graph entities (an
  entity carried by few items says more than one carried by many).

A never-seen item has content, so it is ranked like any other: this is the
bar a fused student has to clear on cold items. Nothing is trained; the item
similarity matrix is computed once ([I, I], fine for catalogues of tens of
thousands of items).
"""

from __future__ import annotations

import numpy as np


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def text_vectors(item_text: np.ndarray) -> np.ndarray:
    """[I, H] pooled BERT vectors -> [I, H] centred unit vectors."""
    x = np.asarray(item_text, np.float64)
    return _unit_rows(x - x.mean(0, keepdims=True))


def kg_vectors(item_entity: np.ndarray, num_entities: int) -> np.ndarray:
    """[I, M] entity codes (-1 pads) -> [I, E] unit TF-IDF vectors (zero rows for
    items without entities)."""
    num_items = item_entity.shape[0]
    x = np.zeros((num_items, num_entities), np.float64)
    rows, slots = np.nonzero(item_entity >= 0)
    x[rows, item_entity[rows, slots]] = 1.0
    df = x.sum(0)
    idf = np.log((1.0 + num_items) / (1.0 + df)) + 1.0  # smoothed: never zero or negative
    return _unit_rows(x * idf[None])


def similarity(content: np.ndarray) -> np.ndarray:
    """[I, I] float32 cosine similarities of unit content rows, self-similarity zeroed
    (an item never recommends itself; training items are excluded anyway)."""
    s = content @ content.T
    np.fill_diagonal(s, 0.0)
    return s.astype(np.float32)


class ContentKNN:
    """Scores users from their training rows: params {"S": [I, I]}, side
    {"train_matrix": [U, I] float32}."""

    @staticmethod
    def score_all(params, query, side):
        """[B, num_items] mean similarity of each item to the user's training items."""
        rows = side["train_matrix"][query["user"]]
        count = rows.sum(-1, keepdims=True)
        return (rows @ params["S"]) / (count + (count == 0))
