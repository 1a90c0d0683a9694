"""Transfer: initialise a student's embeddings from the teacher's vectors.

``config.transfer.init``:

* ``random``: the student's own initialiser;
* ``teacher_pca``: teacher item vectors reduced by PCA to the student's size;
  user vectors (where the student has a user table) go through the same
  projection, so dot products keep the teacher's geometry;
* ``teacher_linear``: a linear encoder/decoder pair learned to reconstruct the
  teacher's item vectors (a linear autoencoder; its code is the init).

Transferred tables are rescaled to the standard deviation of the student's
random init, so learning rates tuned for random init still fit. When the
student is wider than the teacher, the first d_teacher columns are
transferred and the rest keep their random init.
``config.transfer.freeze_steps`` holds them fixed for a warm-up (optimizer
group "transferred" gets zero updates until then).
``config.transfer.share`` (``*_fusion`` students over ``fusion.source="text"``):
``text_proj`` starts the fusion text path with a trainable copy of the
teacher's ``item_text_proj``; ``text_proj_frozen`` keeps that copy fixed.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rec_jax import errors

INITS = ("random", "teacher_pca", "teacher_linear")
SHARES = ("none", "text_proj", "text_proj_frozen")
# The fusion layers that hold the copy of the teacher's item_text_proj.
SHARED_LAYERS = {"shared_norm": "layers_0", "shared_proj": "layers_1"}


def pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Principal components of x [n, d].

    Returns:
      (codes [n, dim], components [d, dim], mean [d], explained variance ratio).
    """
    x = np.asarray(x, np.float64)
    if dim > min(x.shape):
        raise ValueError(f"PCA to {dim} dims needs at least {dim} rows and columns, "
                         f"got {x.shape}")
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    components = vt[:dim].T
    explained = float((s[:dim] ** 2).sum() / max((s ** 2).sum(), 1e-30))
    return (x - mean) @ components, components, mean, explained


def linear_map(x: np.ndarray, dim: int, steps: int = 500, lr: float = 1e-2,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Learns W_enc [d, dim], W_dec [dim, d] minimising ||(x - m) W_enc W_dec - (x - m)||².

    Returns:
      (codes [n, dim], W_enc, reconstruction R² on x).
    """
    x = jnp.asarray(x, jnp.float32)
    centred = x - x.mean(0)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    d = x.shape[1]
    params = {"enc": jax.random.normal(k1, (d, dim)) / np.sqrt(d),
              "dec": jax.random.normal(k2, (dim, d)) / np.sqrt(dim)}
    tx = optax.adam(lr)
    state = tx.init(params)

    def loss(p):
        return jnp.square(centred @ p["enc"] @ p["dec"] - centred).sum(-1).mean()

    @jax.jit
    def step(p, s):
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    for _ in range(steps):
        params, state, _ = step(params, state)
    total = float(jnp.square(centred).sum(-1).mean())
    r2 = 1.0 - float(loss(params)) / max(total, 1e-30)
    return np.asarray(centred @ params["enc"]), np.asarray(params["enc"]), r2


def _rescale(codes: np.ndarray, target_std: float) -> np.ndarray:
    return (codes / max(float(codes.std()), 1e-12) * target_std).astype(np.float32)


def transferred_tables(kind: str, teacher_items: np.ndarray, teacher_users: np.ndarray | None,
                       dim: int, item_std: float, user_std: float | None,
                       seed: int = 0) -> dict:
    """Student-sized item (and user) tables from the teacher's vectors.

    Returns:
      {"item": [I, dim], "user": [U, dim] or absent, "explained": float}.
    """
    if kind not in INITS:
        raise errors.ConfigError(f"config.transfer.init={kind!r}: use one of {INITS}")
    dim = min(dim, np.shape(teacher_items)[1], np.shape(teacher_items)[0])
    out = {}
    if kind == "teacher_pca":
        codes, components, mean, explained = pca(teacher_items, dim)
        out["item"] = _rescale(codes, item_std)
        if teacher_users is not None and user_std is not None:
            out["user"] = _rescale((np.asarray(teacher_users) - mean) @ components, user_std)
    else:
        codes, enc, explained = linear_map(teacher_items, dim, seed=seed)
        out["item"] = _rescale(codes, item_std)
        if teacher_users is not None and user_std is not None:
            users = np.asarray(teacher_users, np.float32)
            out["user"] = _rescale((users - np.asarray(teacher_items).mean(0)) @ enc, user_std)
    out["explained"] = explained
    return out


# Where each student keeps its ID tables (param paths).
TABLES = {
    "mf": {"item": ("item_embed", "embedding"), "user": ("user_embed", "embedding")},
    "sasrec": {"item": ("item_embed", "embedding")},
    "deepfm": {"item": ("item_embed", "embedding"), "user": ("user_embed", "embedding")},
}


def apply_transfer(params: dict, family: str, kind: str, teacher_items, teacher_users,
                   seed: int = 0) -> tuple[dict, float]:
    """Replaces a student's ID tables with transferred ones.

    Returns:
      (params, explained variance / R² of the item transfer).
    """
    if kind == "random":
        return params, float("nan")
    paths = TABLES[family]
    params = jax.tree.map(lambda x: x, params)  # a copy of the containers

    def get(path):
        node = params
        for k in path:
            node = node[k]
        return node

    def put(path, value):
        node = params
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = jnp.asarray(value, node[path[-1]].dtype)

    item = np.asarray(get(paths["item"]))
    user = np.asarray(get(paths["user"])) if "user" in paths else None
    tables = transferred_tables(kind, teacher_items, teacher_users if user is not None else None,
                                item.shape[1], float(item.std()),
                                float(user.std()) if user is not None else None, seed)
    k = tables["item"].shape[1]
    put(paths["item"], np.concatenate([tables["item"], item[:, k:]], axis=1))
    if "user" in tables:
        put(paths["user"], np.concatenate([tables["user"], user[:, k:]], axis=1))
    return params, tables["explained"]


def transferred_label(family: str):
    """Optimizer label function: transferred tables vs everything else."""
    table_paths = set(TABLES[family].values())

    def label(path):
        return "transferred" if tuple(path[-2:]) in table_paths else "rest"
    return label


def with_transfer(spec, family: str, cfg, teacher_items, teacher_users, seed: int = 0):
    """Wraps a ModelSpec so its init loads transferred tables (and may freeze them).

    Works for plain specs (params = the student's) and distillation specs
    (params = {"student": ..., "kd": ...}).
    """
    base_init = spec.init

    def init(rng):
        params = base_init(rng)
        if isinstance(params, dict) and "student" in params and "kd" in params:
            student, _ = apply_transfer(params["student"], family, cfg.init, teacher_items,
                                        teacher_users, seed)
            return {**params, "student": student}
        return apply_transfer(params, family, cfg.init, teacher_items, teacher_users, seed)[0]

    freeze = int(cfg.freeze_steps)
    return dataclasses.replace(
        spec, init=init,
        label_fn=transferred_label(family) if freeze else spec.label_fn,
        freeze_steps={"transferred": freeze} if freeze else spec.freeze_steps)


# ---------------------------------------------------------------------------
# Sharing the teacher's text projection.
# ---------------------------------------------------------------------------


def share_text_proj(params: dict, teacher_params: dict, text_scale: float = 1.0) -> dict:
    """Copies the teacher's item_text_proj into a fused student's shared layers.

    Args:
      params: the student's params (ItemFusion under "fuse", with shared layers).
      teacher_params: the teacher's params ("item_text_proj" is all that is read).
      text_scale: the teacher's fixed factor on that projection (Teacher.text_scale;
        below 1 for the profile tower); it is folded into the copied Dense, so
        the student starts from the item text vectors the teacher actually used.
    """
    if "item_text_proj" not in teacher_params:
        raise errors.ConfigError("config.transfer.share: the teacher has no "
                                 "item_text_proj (config.teacher.use_text is off)")
    source = teacher_params["item_text_proj"]
    fuse = dict(params["fuse"])
    for layer, teacher_layer in SHARED_LAYERS.items():
        copied = {}
        for key, value in fuse[layer].items():
            weight = np.asarray(source[teacher_layer][key])
            if weight.shape != value.shape:
                raise errors.ConfigError(
                    f"config.transfer.share: teacher item_text_proj/{teacher_layer}/{key} is "
                    f"{weight.shape}, the student's fuse/{layer}/{key} {value.shape}")
            if layer == "shared_proj":
                weight = weight * text_scale
            copied[key] = jnp.asarray(weight, value.dtype)
        fuse[layer] = copied
    return {**params, "fuse": fuse}


def shared_label(base=None):
    """Optimizer label function: the shared teacher layers are "frozen"; other
    params keep base's label (or "rest")."""
    def label(path):
        if len(path) >= 2 and path[-2] in SHARED_LAYERS:
            return "frozen"
        return base(path) if base is not None else "rest"
    return label


def with_shared_text(spec, share: str, teacher_params: dict, text_scale: float = 1.0):
    """Wraps a ModelSpec so its init starts from the teacher's item_text_proj.

    share is config.transfer.share; "text_proj_frozen" also labels the copy
    "frozen" for the optimizer (zero updates). Plain and distillation specs.
    text_scale: see share_text_proj.
    """
    if share not in SHARES:
        raise errors.ConfigError(f"config.transfer.share={share!r}: use one of {SHARES}")
    if share == "none":
        return spec
    base_init = spec.init

    def init(rng):
        params = base_init(rng)
        if isinstance(params, dict) and "student" in params and "kd" in params:
            return {**params, "student": share_text_proj(params["student"], teacher_params,
                                                         text_scale)}
        return share_text_proj(params, teacher_params, text_scale)

    if share == "text_proj":
        return dataclasses.replace(spec, init=init)
    return dataclasses.replace(spec, init=init, label_fn=shared_label(spec.label_fn))
