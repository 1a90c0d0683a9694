"""A trained student as a serving bundle: a TensorFlow SavedModel plus metadata.

Layout of a bundle folder::

    model/        SavedModel: recommend, score, encode_items, add_item
    meta.json     model name, sizes, original user/item ids, titles, years, genres,
                  the text settings a new item needs
    tokenizer/    the word-piece tokenizer of the text path (fusion students)
    store/        what the service adds at run time (items.jsonl, interactions.jsonl)

Why jax2tf and not orbax-export: the service adds items at run time, so the
item-side tables must be named, assignable variables of the SavedModel
(``add_item`` writes one row). jax2tf gives exactly that: the student's own
``score_all`` is converted once over explicit variables (params, user tables,
item tables), while orbax-export's JaxModule flattens everything into one
anonymous parameter list with no stable handle for a table. Top-K and the
seen-item mask run in TensorFlow around the converted function (TF 2.21
cannot load JAX 0.10's StableHLO top-k composite, and the mask is cheaper
there anyway).

New items take rows after the trained ones (``capacity = num_items +
max_new_items``). Their ID rows (embedding, bias, linear term) are zero and
their ``item_seen`` flag is False, so an inductive `_fusion` student scores
them through its text path alone, exactly as it scores never-seen items
offline. ``hold_out="cold"`` exports the `cold_items` split's cold items as
inactive rows, so that the service can add them back as new items and be
checked against the offline evaluation (rec_jax.deploy.cold_check).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax import errors
from rec_jax.data import features, raw

K_MAX = 100  # the largest k that recommend() serves
ITEM_TABLES = ("item_year", "item_genres", "item_seen", "fusion_text")
USER_TABLES = ("user_age", "user_gender", "user_occupation")
HOLD_OUT = ("none", "cold")


@dataclasses.dataclass
class TextPath:
    """How a new item's text becomes the student's fusion input.

    Attributes:
      fn: (variables, input_ids, attention_mask, token_type_ids) -> [B, d_t].
      variables: the pytree fn reads (BERT, and the teacher's text projection).
      max_len: token length the item texts were encoded with.
      tokenizer_dir: the tokenizer files to copy into the bundle.
      source: "teacher" (the teacher's item vector) or "text" (BERT's pooled vector).
    """

    fn: Callable
    variables: Any
    max_len: int
    tokenizer_dir: str
    source: str


@dataclasses.dataclass
class Student:
    """A trained student as export reads it (see rec_jax.deploy.trained.load).

    Attributes:
      name: model name, e.g. "mf_kd_fusion".
      family: "mf" | "sasrec" | "deepfm".
      module: the student's Linen module (its own, without KD heads).
      params: its trained params.
      query: per-user query arrays [U, ...] at test time (history incl. validation).
      side: the feature tables it reads (item tables [I, ...], user tables [U]).
      exclude: [U, I] bool, the items never recommended to a user (train + valid).
      user_ids, item_ids: original ids of rows; item_title, item_year [I],
        item_genres [I, G] bool: metadata shown and used for new items.
      text: the new-item text path (fusion students), else None.
      cold_items: [n] rows of the split's cold items (never in training).
    """

    name: str
    family: str
    module: Any
    params: Any
    query: dict
    side: dict
    exclude: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_title: np.ndarray
    item_year: np.ndarray
    item_genres: np.ndarray
    text: TextPath | None = None
    cold_items: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def num_items(self) -> int:
        return int(self.exclude.shape[1])


def pad_item_params(params, num_items: int, capacity: int):
    """Zero rows for new items in every item-indexed table (item_embed, item_bias, ...)."""
    def pad(path, x):
        top = str(getattr(path[0], "key", path[0]))
        x = np.asarray(x)
        if top.startswith("item_") and x.ndim >= 1 and x.shape[0] == num_items:
            return np.concatenate([x, np.zeros((capacity - num_items,) + x.shape[1:], x.dtype)])
        return x
    return jax.tree_util.tree_map_with_path(pad, params)


def serving_tables(student: Student, capacity: int, hold_out: str = "none"):
    """(params, users, items, exclude, active) as host arrays at the bundle's capacity."""
    if hold_out not in HOLD_OUT:
        raise errors.ConfigError(f"--hold_out={hold_out!r}: use one of {HOLD_OUT}")
    n, extra = student.num_items, capacity - student.num_items
    if extra < 0:
        raise errors.ConfigError(f"capacity {capacity} is below the {n} trained items")
    params = pad_item_params(student.params, n, capacity)
    users = {"query": {k: np.asarray(v) for k, v in student.query.items()},
             "side": {k: np.asarray(student.side[k]) for k in USER_TABLES if k in student.side}}
    items = {}
    for k in ITEM_TABLES:
        if k in student.side:
            v = np.asarray(student.side[k])
            items[k] = np.concatenate([v, np.zeros((extra,) + v.shape[1:], v.dtype)])
    active = np.zeros(capacity, bool)
    active[:n] = True
    if hold_out == "cold":
        if student.text is None or not len(student.cold_items):
            raise errors.ConfigError(f"--hold_out=cold needs a `_fusion` student of a "
                                     f"cold_items job ({student.name!r}: "
                                     f"{len(student.cold_items)} cold items)")
        active[student.cold_items] = False
    exclude = np.concatenate([student.exclude, np.zeros((student.exclude.shape[0], extra),
                                                        bool)], axis=1)
    return params, users, items, exclude, active


def score_function(module, capacity: int) -> Callable:
    """(params, users, items, user_rows [B]) -> [B, capacity] raw scores, in JAX."""
    big = module.clone(num_items=capacity)

    def scores(params, users, items, user_rows):
        query = {k: v[user_rows] for k, v in users["query"].items()}
        side = dict(users["side"], **items)
        return big.apply({"params": params}, query, side, method="score_all").astype(jnp.float32)
    return scores


def _servable(student: Student, capacity: int, hold_out: str):
    """The tf.Module that is saved: variables and the four functions."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    params, users, items, exclude, active = serving_tables(student, capacity, hold_out)
    const = lambda tree: tf.nest.map_structure(  # noqa: E731
        lambda a: tf.Variable(a, trainable=False), tree)
    m = tf.Module()
    m.params, m.users, m.items = const(params), const(users), const(items)
    m.exclude = tf.Variable(exclude, trainable=False)
    m.active = tf.Variable(active, trainable=False)
    scores_tf = jax2tf.convert(score_function(student.module, capacity), with_gradient=False,
                               polymorphic_shapes=[None, None, None, "b"])

    def masked(user_rows, min_row=0):
        s = scores_tf(m.params, m.users, m.items, user_rows)
        candidates = tf.logical_and(m.active, tf.range(capacity) >= min_row)
        keep = tf.logical_and(candidates[None], tf.logical_not(tf.gather(m.exclude, user_rows)))
        return s, tf.where(keep, s, tf.constant(-np.inf, tf.float32))

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.int32),
                                                   tf.TensorSpec([], tf.int32),
                                                   tf.TensorSpec([], tf.int32)])
    def recommend(user_rows, k, min_row):
        """Top-k active items of row >= min_row per user row (0: all items; the
        trained item count: new items only), the user's train and valid items excluded."""
        top = tf.math.top_k(masked(user_rows, min_row)[1], k=tf.clip_by_value(k, 1, K_MAX))
        return {"items": top.indices, "scores": top.values}

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.int32),
                                  tf.TensorSpec([None, None], tf.int32)])
    def score(user_rows, item_rows):
        """Raw scores of given item rows ([B, N]) for user rows ([B])."""
        return {"scores": tf.gather(masked(user_rows)[0], item_rows, batch_dims=1)}

    m.recommend, m.score = recommend, score
    signatures = {"recommend": recommend, "score": score}
    if student.text is not None:
        t = student.text
        m.text_vars = const(t.variables)
        tokens_shape = f"b, {t.max_len}"  # the length the item texts were encoded with
        text_tf = jax2tf.convert(t.fn, with_gradient=False,
                                 polymorphic_shapes=[None] + [tokens_shape] * 3)
        token = tf.TensorSpec([None, t.max_len], tf.int32)

        @tf.function(autograph=False, input_signature=[token, token, token])
        def encode_items(input_ids, attention_mask, token_type_ids):
            """Fusion vectors [B, d_t] of item texts (the tokenizer's outputs)."""
            return {"vectors": text_tf(m.text_vars, input_ids, attention_mask, token_type_ids)}

        dim = int(items["fusion_text"].shape[1])
        num_genres = int(items["item_genres"].shape[1]) if "item_genres" in items else 0

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([dim]),
                                      tf.TensorSpec([None]), tf.TensorSpec([], tf.int32),
                                      tf.TensorSpec([], tf.int32)])
        def add_item(row, vector, genres, year_code, seen_as_row):
            """Writes a new item into row `row` (never seen: text path only) and activates it.

            seen_as_row >= 0: the users who revealed the item of that (held-out)
            row have revealed this one (an item re-added under a known id);
            -1: nobody has.
            """
            def put(var, value):
                return var.assign(tf.tensor_scatter_nd_update(var, [[row]], [value]))
            seen_by = tf.cond(seen_as_row >= 0,
                              lambda: tf.gather(m.exclude, tf.maximum(seen_as_row, 0), axis=1),
                              lambda: tf.zeros([tf.shape(m.exclude)[0]], tf.bool))
            writes = [m.exclude.assign(tf.transpose(tf.tensor_scatter_nd_update(
                tf.transpose(m.exclude), [[row]], [seen_by]))),
                put(m.items["fusion_text"], vector), put(m.items["item_seen"], False)]
            if num_genres:
                writes.append(put(m.items["item_genres"], genres[:num_genres]))
            if "item_year" in items:
                writes.append(put(m.items["item_year"], year_code))
            # Activated last: a concurrent recommend sees the row whole or not at all.
            with tf.control_dependencies(writes):
                put(m.active, True)
            return {"row": row}

        m.encode_items, m.add_item = encode_items, add_item
        signatures.update(encode_items=encode_items, add_item=add_item)
    return m, signatures, items


def export(student: Student, out: str, max_new_items: int = 1000, hold_out: str = "none",
           extra_meta: dict | None = None) -> dict:
    """Writes the bundle of `student` into `out` (replacing it); returns meta."""
    import tensorflow as tf

    capacity = student.num_items + max_new_items
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "store"))
    m, signatures, items = _servable(student, capacity, hold_out)
    tf.saved_model.save(m, os.path.join(tmp, "model"), signatures=signatures)
    held = student.cold_items if hold_out == "cold" else []
    meta = {
        "model": student.name, "family": student.family,
        "num_users": int(len(student.user_ids)), "num_items": student.num_items,
        "capacity": capacity, "k_max": K_MAX, "hold_out": hold_out,
        "held_out_rows": [int(r) for r in held],
        "user_ids": [str(u) for u in student.user_ids],
        "items": [{"item_id": str(i), "title": str(t), "year": int(y),
                   "genres": [g for g, on in zip(raw.GENRES, gs) if on]}
                  for i, t, y, gs in zip(student.item_ids, student.item_title,
                                         student.item_year, student.item_genres)],
        "genres": list(raw.GENRES),
        "year_vocab": int(items["item_year"].max()) + 1 if "item_year" in items else 0,
        "year_buckets": [int(y) for y in features.YEAR_BUCKETS],
        "text": None,
    }
    if student.text is not None:
        shutil.copytree(student.text.tokenizer_dir, os.path.join(tmp, "tokenizer"),
                        ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx",
                                                      "*.h5", "*.msgpack", "onnx", "openvino"))
        meta["text"] = {"max_len": student.text.max_len, "source": student.text.source,
                        "dim": int(items["fusion_text"].shape[1])}
    meta.update(extra_meta or {})
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return meta
