"""Teacher artifacts: what a trained teacher knows, saved once for the students.

``<workdir>/teacher/artifacts.npz`` holds, for the training view of the split
(each user's history = their training items):

* ``item_vec`` [I, d], ``item_bias`` [I] and ``user_vec`` [U, d]: the two
  towers, so a student step can rebuild the teacher's logits over any
  candidate list (logit = (u·i + b) / temperature);
* ``topk_items`` / ``topk_scores`` [U, K]: each user's top K over the full
  catalogue with training items excluded;
* ``ctr_prob`` [num_train_rows]: CTR probability of every training pair, in
  the order of ``split.train``;
* ``genre_prob`` [I, G]: the genre head's probabilities;
* ``version``, ``fingerprint`` (of the teacher config, data, split and seed)
  and ``temperature``.

Students in ``cached`` mode read these instead of running the teacher; the
fingerprint stops a student from reading a teacher trained on another split
(whose top-K would leak that split's test items).
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax import errors
from rec_jax.data.interactions import SplitData
from rec_jax.models.teacher import Teacher
from rec_jax.spec import ModelName

VERSION = 1


def fingerprint(config, source: str = "teacher") -> str:
    """Hash of everything that determines the teacher and the split it saw.

    The seed enters when the split depends on it: ratio, cold_items,
    train_fraction < 1, and loo_time with its ties in a seeded random order
    (the default). Only `loo_time` with `tie_order="item_id"` (the old order)
    is the same split for every seed, so one teacher serves every seed there.
    """
    d = config.data
    if ModelName.parse(source).is_teacher:
        teacher = config.teacher.to_dict()
        teacher.pop("cache_dir", None)  # where it is kept, not what it is
        if not teacher["train"].get("init_from"):  # (absent when unset: keeps older
            teacher["train"].pop("init_from", None)  # fingerprints valid)
    else:  # a student others distil from (`@sasrec`): its own section
        teacher = config.model[source].to_dict()
        if not teacher["train"].get("init_from"):
            teacher["train"].pop("init_from", None)
    # Keys added after teachers were cached stay out while at their defaults
    # (keeps older fingerprints valid); the KG settings count when it is used.
    for key, default in (("use_kg", False), ("kg_scale", 1.0), ("id_dropout", 0.0),
                         ("finetune_from", ""), ("sampled_negatives", 0)):
        if key in teacher and teacher[key] == default:
            teacher.pop(key)
    if not teacher["train"].get("min_epochs", 1.0):  # (absent at 0: keeps older
        teacher["train"].pop("min_epochs", None)      # fingerprints valid)
    if not teacher["optim"].get("sparse_tables", True):
        teacher["optim"].pop("sparse_tables")
    seeded_split = d.split != "loo_time" or d.train_fraction < 1.0 or d.tie_order == "random"
    key = {"teacher": teacher, "split_seed": config.seed if seeded_split else None,
           "data": {k: d[k] for k in ("variant", "source_dir", "split", "cold_fraction",
                                      "train_fraction")}}
    if d.split == "window":
        key["data"]["window"] = [d.window_edges, d.window]
    if teacher.get("use_kg"):
        key["data"]["kg"] = [d.kg_dir, d.kg_min_items, d.kg_max_entities]
    if d.extra_interactions:  # (the log's path; a rewritten log needs a fresh workdir)
        key["data"]["extra_interactions"] = d.extra_interactions
    if d.tie_order != "item_id":  # (absent for the old order: keeps its fingerprints valid)
        key["data"]["tie_order"] = d.tie_order
    if config.dtype != "float32":  # (absent for float32: keeps older fingerprints valid)
        key["dtype"] = config.dtype
    if source != "teacher":  # (absent for the teacher: keeps older fingerprints valid)
        key["source"] = source
    # Which validation users early-stop the teacher, and its CTR labels (each
    # absent at its old default, which keeps older fingerprints valid).
    if config.eval.selection != "all":
        key["selection"] = config.eval.selection
    if d.ctr_threshold != 4.0:
        key["data"]["ctr_threshold"] = d.ctr_threshold
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compute(module, params, side, data: SplitData, make_query, topk: int,
            batch_users: int = 256) -> dict[str, np.ndarray]:
    """Runs the trained teacher over every user and training pair."""

    @jax.jit
    def per_users(params, query, side, exclude):
        out = module.apply({"params": params}, query, side, method=Teacher.outputs_for_users)
        logits = jnp.where(exclude, -jnp.inf, out["logits"])
        scores, items = jax.lax.top_k(logits, topk)
        return out, items, scores

    @jax.jit
    def ctr(params, user_vec, item_vec):
        # The CTR head on stored tower outputs: one user-tower pass per user,
        # not one per training pair.
        return jax.nn.sigmoid(module.apply({"params": params}, user_vec, item_vec,
                                           method=Teacher.ctr_logit))

    def batch(query, exclude):
        out, items, scores = per_users(params, query, side, exclude)
        return out["user_vec"], items, scores, out

    user_vec, top_items, top_scores, out = _over_users(batch, data, make_query, batch_users)
    item_vec = np.asarray(out["item_vec"], np.float32)
    rows = data.split.train
    pair_users = data.dataset.user[rows]
    pair_items = data.dataset.item[rows]
    probs = []
    b = 8192
    for lo in range(0, len(rows), b):
        u, i = pair_users[lo:lo + b], pair_items[lo:lo + b]
        n = len(u)
        u, i = np.pad(u, (0, b - n)), np.pad(i, (0, b - n))
        probs.append(np.asarray(ctr(params, user_vec[u], item_vec[i]))[:n])
    return {
        "user_vec": user_vec,
        "item_vec": item_vec,
        "item_bias": np.asarray(out["item_bias"], np.float32),
        "topk_items": top_items,
        "topk_scores": top_scores,
        "ctr_prob": np.concatenate(probs).astype(np.float32),
        "genre_prob": np.asarray(out["genre_prob"], np.float32),
    }


def compute_from_towers(spec, params, side, data: SplitData, topk: int,
                        batch_users: int = 256) -> dict[str, np.ndarray]:
    """Artifacts of a dot-product student used as a teacher (`mf_kd@sasrec`):
    its user and item towers and per-user top K. It has no genre or CTR head,
    so those arrays are absent and the KD terms that read them are skipped."""
    items, bias = spec.item_table_fn(params, side)
    items = np.asarray(items, np.float32)
    bias = np.zeros(len(items), np.float32) if bias is None else np.asarray(bias, np.float32)

    @jax.jit
    def per_users(params, query, exclude):
        user = spec.user_vectors_fn(params, query, side)
        logits = jnp.where(exclude, -jnp.inf, user @ items.T + bias)
        scores, top = jax.lax.top_k(logits, topk)
        return user, top, scores

    def batch(query, exclude):
        return (*per_users(params, query, exclude), None)

    user_vec, top_items, top_scores, _ = _over_users(batch, data, spec.make_query, batch_users)
    return {"user_vec": user_vec, "item_vec": items, "item_bias": bias,
            "topk_items": top_items, "topk_scores": top_scores}


def _over_users(batch, data: SplitData, make_query, batch_users: int):
    """Runs batch(query, exclude) -> (user_vec, top items, top scores, extra) over
    every user in padded batches of one shape (one compilation); training items
    are excluded. Returns the three arrays over all users and the last extra."""
    users_all = np.arange(data.num_users, dtype=np.int32)
    user_vec, top_items, top_scores, extra = [], [], [], None
    for lo in range(0, data.num_users, batch_users):
        users = users_all[lo:lo + batch_users]
        n = len(users)
        padded = np.pad(users, (0, batch_users - n))
        u, top, scores, extra = batch(make_query(padded, "train"), data.train.dense(padded))
        user_vec.append(np.asarray(u)[:n])
        top_items.append(np.asarray(top)[:n])
        top_scores.append(np.asarray(scores)[:n])
    return (np.concatenate(user_vec).astype(np.float32),
            np.concatenate(top_items).astype(np.int32),
            np.concatenate(top_scores).astype(np.float32), extra)


def save(path: str, arrays: dict, config, source: str = "teacher") -> None:
    """Writes artifacts with their fingerprint; a student source has temperature 1."""
    temperature = config.teacher.temperature if ModelName.parse(source).is_teacher else 1.0
    meta = {"version": np.array(VERSION), "fingerprint": np.array(fingerprint(config, source)),
            "temperature": np.array(temperature, np.float32)}
    np.savez(path + ".tmp.npz", **arrays, **meta)
    os.replace(path + ".tmp.npz", path)


def load(path: str, config, source: str = "teacher") -> dict[str, np.ndarray]:
    """Loads artifacts, refusing ones made for another teacher, data or split."""
    if not os.path.exists(path):
        raise errors.MissingInputError(
            f"teacher artifacts not found: {path}. Run the teacher stage first "
            "(--stage=teacher, or --stage=all) in the same workdir.")
    with np.load(path, allow_pickle=False) as f:
        arrays = dict(f)
    if int(arrays["version"]) != VERSION:
        raise errors.StaleInputError(f"{path}: artifacts version {int(arrays['version'])}, "
                                     f"expected {VERSION}; rerun the teacher stage")
    expected = fingerprint(config, source)
    if str(arrays["fingerprint"]) != expected:
        raise errors.StaleInputError(
            f"{path} was made by a teacher with another config, data split or seed "
            f"(fingerprint {arrays['fingerprint']} != {expected}); use a fresh workdir "
            "or delete the teacher folder to retrain it")
    return arrays
