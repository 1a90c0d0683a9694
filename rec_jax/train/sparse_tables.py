"""Row-sparse training of embedding tables: lazy Adam on the rows a step reads.

With a dense gradient, a step's cost grows with its tables: the gradient of a
``[rows, d]`` table is a ``[rows, d]`` array (zeros except the rows the batch
looked up) and Adam then rewrites every row's moments and value. BPR-MF's user
and item tables grow with the data, so its epoch time grew faster than the
data. This module is the ``config.optim.sparse_tables`` path:

* **Which parameters are tables** is read off the loss itself: a parameter
  whose every use in ``loss_fn`` is a row lookup (``table[ids]``, ``jnp.take``,
  ``nn.Embed``: an XLA ``gather`` of whole rows along axis 0) is a table; any
  other use (a matmul over the whole catalogue, a norm, ...) keeps it dense.
  The loss is traced to a jaxpr once per compilation and evaluated by a small
  interpreter (:func:`_evaluate`) that replaces each lookup ``table[ids]`` by
  ``stop_gradient(table)[ids] + delta`` with ``delta`` a zero array of the
  lookup's shape: the gradient with respect to ``delta`` is the gradient of
  the looked-up rows, ``[lookups, d]``, and no ``[rows, d]`` array is formed
  (what TensorFlow calls ``IndexedSlices``).
* **Lazy Adam** (TF-Addons ``LazyAdam``, PyTorch ``SparseAdam``): a table row
  read this step gets the Adam update of its summed gradient, with the global
  step's bias correction; every other row keeps its value and moments. Dense
  parameters get plain Adam, the same arithmetic as ``optax.adam``.

With no table found (or when only dense gradients are given, ``update``), the
result is plain Adam. Lazy Adam is not the same optimiser as dense Adam on a
table: a dense step also decays the moments of rows it did not read and moves
them by their remaining momentum; a lazy step leaves them alone.

Cost: a step touches the rows it read (lookups, a deduplication and the
row updates), never a whole table, provided the state is donated so that
XLA writes the rows in place (``make_pmapped_step`` donates a RowSparseAdam
state on every backend; mesh mode always donates). On XLA's CPU backend a
gathered or scattered element costs several times an element of dense Adam's
fused pass, so the path is slower than dense Adam while a table is not much
larger than the rows a step reads (ml-100k: 943 users, 2,048 reads per
step) and faster once it is (synthetic 10M: 69,878 users).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.extend import core as jex_core

_gather_p = jex_core.primitives.gather_p
_jit_p = jex_core.primitives.jit_p


# ---------------------------------------------------------------------------
# The optimiser: dense Adam for dense leaves, lazy Adam for table rows.
# ---------------------------------------------------------------------------


class RowSparseAdamState(NamedTuple):
    """Adam's state: the step count, first / second moments and a row scratch per leaf."""

    count: jax.Array  # [] int32
    mu: Any
    nu: Any
    slot: Any  # per leaf: [rows] int32 scratch of the row update (no meaning between steps)


class RowSparseAdam(NamedTuple):
    """An optax-style transformation (``init``, ``update``) that also updates rows.

    ``update(grads, state, params)`` takes dense gradients and is plain Adam
    (what a caller that knows nothing of tables gets). The training step
    calls :func:`sparse_update_step` instead, which uses ``update_rows``.
    """

    init: Callable
    update: Callable
    update_rows: Callable


def _adam_moments(g, m, v, b1, b2):
    # optax.scale_by_adam's arithmetic, in its order, so dense leaves match it.
    return (1 - b1) * g + b1 * m, (1 - b2) * (g * g) + b2 * v


def _adam_step(m, v, count, lr, b1, b2, eps):
    """-lr * m_hat / (sqrt(v_hat) + eps): optax.adam's update from new moments."""
    m_hat = m / (1 - b1 ** count).astype(m.dtype)
    v_hat = v / (1 - b2 ** count).astype(v.dtype)
    return -lr * (m_hat / (jnp.sqrt(v_hat) + eps))


def row_sparse_adam(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9,
                    b2: float = 0.999, eps: float = 1e-8) -> RowSparseAdam:
    """Adam whose table leaves can be updated on the rows a step read only.

    Args:
      learning_rate: a float or an optax schedule of the step count (read
        before the count increments, as ``optax.adam`` reads it).
      b1, b2, eps: Adam's hyper-parameters (optax's defaults).

    Returns:
      A :class:`RowSparseAdam`; ``update_rows(dense_grads, rows, state,
      params)`` takes

      * ``dense_grads``: {leaf index: gradient} for the dense leaves,
      * ``rows``: {leaf index: (ids [n] int, grads [n, *row_shape])} for the
        tables: the rows read this step (duplicates allowed: their gradients
        add; an id outside ``[0, rows)`` adds no gradient to the row it
        clamps to, as XLA's gather clamps it),

      where a leaf index counts the leaves of ``params`` in
      ``jax.tree.leaves`` order, and returns ``(new_params, new_state)``.
      A leaf in neither dict keeps its value and moments.
    """
    lr_at = learning_rate if callable(learning_rate) else (lambda count: learning_rate)

    def init(params):
        zeros = lambda p: jnp.zeros_like(p)  # noqa: E731
        slot = lambda p: jnp.zeros(jnp.shape(p)[:1], jnp.int32)  # noqa: E731
        return RowSparseAdamState(jnp.zeros((), jnp.int32), jax.tree.map(zeros, params),
                                  jax.tree.map(zeros, params), jax.tree.map(slot, params))

    def update(grads, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        lr = lr_at(state.count)
        moments = jax.tree.map(lambda g, m, v: _adam_moments(g, m, v, b1, b2),
                               grads, state.mu, state.nu)
        mu = jax.tree.map(lambda g, mv: mv[0], grads, moments)
        nu = jax.tree.map(lambda g, mv: mv[1], grads, moments)
        updates = jax.tree.map(lambda m, v: _adam_step(m, v, count, lr, b1, b2, eps), mu, nu)
        return updates, RowSparseAdamState(count, mu, nu, state.slot)

    def update_rows(dense_grads, rows, state, params):
        count = optax.safe_increment(state.count)
        lr = lr_at(state.count)
        leaves, treedef = jax.tree.flatten(params)
        mus, nus = jax.tree.leaves(state.mu), jax.tree.leaves(state.nu)
        slots = jax.tree.leaves(state.slot)
        for k, g in dense_grads.items():
            mus[k], nus[k] = _adam_moments(g, mus[k], nus[k], b1, b2)
            leaves[k] = leaves[k] + _adam_step(mus[k], nus[k], count, lr, b1, b2, eps)
        for k, (ids, g) in rows.items():
            leaves[k], mus[k], nus[k], slots[k] = _lazy_adam_rows(
                leaves[k], mus[k], nus[k], slots[k], ids, g, count, lr, b1, b2, eps)
        unflat = lambda xs: jax.tree.unflatten(treedef, xs)  # noqa: E731
        return unflat(leaves), RowSparseAdamState(count, unflat(mus), unflat(nus),
                                                  unflat(slots))

    return RowSparseAdam(init, update, update_rows)


def _lazy_adam_rows(table, mu, nu, slot, ids, grads, count, lr, b1, b2, eps):
    """Adam on the rows `ids` of one table; other rows untouched.

    Args:
      table, mu, nu: [rows, *row_shape].
      slot: [rows] int32 scratch (any content; see below).
      ids: [n] row ids read this step (duplicates allowed; out of range:
        clamped, their gradient dropped).
      grads: [n, *row_shape] gradient of each read.

    Returns:
      (table, mu, nu, slot) with the read rows updated.
    """
    num_rows, n = table.shape[0], ids.shape[0]
    valid = (ids >= 0) & (ids < num_rows)
    grads = jnp.where(valid.reshape((n,) + (1,) * (grads.ndim - 1)), grads, 0)
    ids = jnp.clip(ids, 0, num_rows - 1)
    # Deduplicate without sorting (XLA's CPU sort costs more than the rest of
    # the update): every read writes its position into its row's slot, one
    # write per row survives, and reading the slot back gives each read the
    # position of its row's representative. Only slots written this step are
    # read, so the scratch never needs clearing.
    slot = slot.at[ids].set(jnp.arange(n, dtype=jnp.int32), mode="promise_in_bounds")
    first = _take_rows(slot, ids)
    # The dense gradient of a row is the sum over its reads: Adam's moments
    # see that sum once. Every read of a row computes the same new row from
    # the same inputs, so the duplicate writes below all write one value.
    summed = _take_rows(jax.ops.segment_sum(grads, first, num_segments=n), first)
    m, v = _adam_moments(summed, _take_rows(mu, ids), _take_rows(nu, ids), b1, b2)
    new_rows = _take_rows(table, ids) + _adam_step(m, v, count, lr, b1, b2, eps)
    put = lambda x, rows: x.at[ids].set(rows, mode="promise_in_bounds")  # noqa: E731
    return put(table, new_rows), put(mu, m), put(nu, v), slot


def _take_rows(x, rows):
    """x[rows] for rows [n] known to lie in [0, len(x)): no bounds checks or index arithmetic."""
    dims = jax.lax.GatherDimensionNumbers(offset_dims=tuple(range(1, x.ndim)),
                                          collapsed_slice_dims=(0,), start_index_map=(0,))
    return jax.lax.gather(x, rows[:, None], dims, (1,) + x.shape[1:],
                          mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)


# ---------------------------------------------------------------------------
# Finding a loss's tables, and its gradient as rows.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Lookup:
    """One row lookup of a table in the loss."""

    leaf: int  # the table: its index among the param leaves
    shape: tuple  # of the rows it returns: ids.shape + row_shape
    dtype: Any


def _is_row_lookup(eqn) -> bool:
    """Whether a gather reads whole rows along axis 0: `table[ids]`, ids [..., 1]."""
    operand, indices = (v.aval for v in eqn.invars)
    dims = eqn.params["dimension_numbers"]
    first_row_dim = indices.ndim - 1
    return (indices.shape[-1:] == (1,)
            and tuple(dims.collapsed_slice_dims) == (0,)
            and tuple(dims.start_index_map) == (0,)
            and not tuple(dims.operand_batching_dims)
            and tuple(eqn.params["slice_sizes"]) == (1,) + tuple(operand.shape[1:])
            and tuple(dims.offset_dims) == tuple(range(first_row_dim,
                                                       first_row_dim + operand.ndim - 1)))


def _sources(jaxpr, tables: dict, seeds: dict, path: tuple, lookups: dict) -> list:
    """What each output of a jaxpr was computed from, as far as tables go (avals only).

    A value's sources are ("lookup", path) for rows a table lookup returned
    and ("dense", leaf) for any other use of a table. Only outputs count, so a
    use that never reaches the loss or its sums (dead code) changes nothing.

    Args:
      jaxpr: a Jaxpr.
      tables: invar -> leaf index, for its inputs that are candidate tables.
      seeds: invar -> sources it carries in from an enclosing jaxpr.
      path: indices of the eqns leading to this jaxpr (() at the top).
      lookups: filled with {path of each row-lookup eqn: _Lookup}.

    Returns:
      One frozenset of sources per outvar.
    """
    src = dict(seeds)

    def of(v):
        return src.get(v, frozenset()) if isinstance(v, jex_core.Var) else frozenset()

    for n, eqn in enumerate(jaxpr.eqns):
        here = path + (n,)
        ins_table = [tables.get(v) if isinstance(v, jex_core.Var) else None
                     for v in eqn.invars]
        ins_src = frozenset().union(*map(of, eqn.invars))
        if all(t is None for t in ins_table) and not ins_src:
            continue
        if (eqn.primitive is _gather_p and ins_table[0] is not None and ins_table[1] is None
                and _is_row_lookup(eqn)):
            out = eqn.outvars[0].aval
            lookups[here] = _Lookup(ins_table[0], tuple(out.shape), out.dtype)
            # The ids' own sources ride along: ids carry no gradient, whatever
            # they were computed from.
            src[eqn.outvars[0]] = ins_src | {("lookup", here)}
            continue
        if eqn.primitive is _jit_p:  # jnp functions are jitted: look inside.
            inner = eqn.params["jaxpr"].jaxpr
            outs = _sources(inner,
                            {iv: t for iv, t in zip(inner.invars, ins_table) if t is not None},
                            {iv: of(ov) for iv, ov in zip(inner.invars, eqn.invars) if of(ov)},
                            here, lookups)
            src.update((ov, s) for ov, s in zip(eqn.outvars, outs) if s)
            continue
        used = ins_src | {("dense", t) for t in ins_table if t is not None}
        src.update((ov, used) for ov in eqn.outvars)
    return [frozenset({("dense", tables[v])}) if isinstance(v, jex_core.Var) and v in tables
            else of(v) for v in jaxpr.outvars]


def _evaluate(jaxpr, consts, args, deltas: dict, path: tuple, reads: dict) -> list:
    """Evaluates a jaxpr, adding `deltas[path]` to the rows of each chosen lookup.

    Args:
      deltas: {path of a lookup eqn: zeros of its output}: the lookups to
        differentiate through their rows (the table itself enters as a constant).
      reads: filled with {path: ids [...]} of those lookups.

    Returns:
      The outputs (as ``jax.core.eval_jaxpr`` would give, plus the deltas).
    """
    env = {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for n, eqn in enumerate(jaxpr.eqns):
        here = path + (n,)
        invals = [read(v) for v in eqn.invars]
        if here in deltas:
            table, indices = invals
            outs = [_gather_p.bind(table, indices, **eqn.params) + deltas[here]]
            ids = indices[..., 0]
            if eqn.params["mode"] != jax.lax.GatherScatterMode.FILL_OR_DROP:
                ids = jnp.clip(ids, 0, table.shape[0] - 1)  # XLA clamps these modes
            reads[here] = ids  # (fill mode: the update drops out-of-range ids' gradient)
        elif eqn.primitive is _jit_p and any(p[:len(here)] == here for p in deltas):
            inner = eqn.params["jaxpr"]
            outs = _evaluate(inner.jaxpr, inner.consts, invals, deltas, here, reads)
        else:
            with eqn.ctx.manager:
                ans = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outs = ans if eqn.primitive.multiple_results else [ans]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


@dataclasses.dataclass(frozen=True)
class TablePlan:
    """Which parameter leaves of a loss are tables, and where it reads them.

    Attributes:
      tables: leaf indices (``jax.tree.leaves(params)`` order) of the
        parameters read only by row lookups.
      lookups: {eqn path: _Lookup} of the live lookups of those tables.
      names: the tables' parameter paths, for messages.
    """

    tables: tuple
    lookups: dict
    names: tuple


def plan_tables(closed_jaxpr, params) -> TablePlan:
    """The tables of a loss traced as ``make_jaxpr(loss_fn)(params, *rest)``."""
    leaves_with_path = jax.tree_util.tree_flatten_with_path(params)[0]
    num_params = len(leaves_with_path)
    jaxpr = closed_jaxpr.jaxpr
    candidates = {v: k for k, v in enumerate(jaxpr.invars[:num_params])
                  if v.aval.ndim >= 1 and jnp.issubdtype(v.aval.dtype, jnp.inexact)}
    lookups: dict = {}
    outs = _sources(jaxpr, candidates, {}, (), lookups)
    used = frozenset().union(*outs)
    dense = {leaf for kind, leaf in used if kind == "dense"}
    live = {path for kind, path in used if kind == "lookup"}
    tables = sorted({lookups[p].leaf for p in live} - dense)
    chosen = {p: lookups[p] for p in sorted(live) if lookups[p].leaf in tables}
    names = tuple(jax.tree_util.keystr(leaves_with_path[k][0]) for k in tables)
    return TablePlan(tuple(tables), chosen, names)


def sparse_update_step(params, opt_state, batch, side, frozen, key, *, loss_fn,
                       tx: RowSparseAdam, mean_grads: Callable, sum_metrics: Callable,
                       gather_shards: Callable):
    """Loss, row gradients of the tables, dense gradients of the rest, and the update.

    The counterpart of ``rec_jax.train.step.apply_update`` for a
    :class:`RowSparseAdam`: the same loss and sums, the dense leaves' gradients
    reduced by `mean_grads` as there, the tables' rows gathered from every batch
    shard by `gather_shards` (``all_gather`` under pmap; identity on a global
    batch) and scaled by 1 / shards, so each row gets the gradient of the
    global mean loss.

    Returns:
      (params, opt_state, sums): sums as ``apply_update``'s (with ``nonfinite``).
    """
    args = (params, batch, side, frozen, key)
    flat_args = jax.tree.leaves(args)
    closed, out_shape = jax.make_jaxpr(loss_fn, return_shape=True)(*args)
    out_tree = jax.tree.structure(out_shape)
    plan = plan_tables(closed, params)
    num_params = len(jax.tree.leaves(params))
    dense_ids = [k for k in range(num_params) if k not in plan.tables]

    def loss_of(dense_values, deltas):
        flat = list(flat_args)
        for k, value in zip(dense_ids, dense_values):
            flat[k] = value
        reads: dict = {}
        outs = _evaluate(closed.jaxpr, closed.consts, flat, deltas, (), reads)
        loss, sums = jax.tree.unflatten(out_tree, outs)
        return loss, (sums, reads)

    deltas = {p: jnp.zeros(look.shape, look.dtype) for p, look in plan.lookups.items()}
    (loss, (sums, reads)), (dense_grads, row_grads) = jax.value_and_grad(
        loss_of, argnums=(0, 1), has_aux=True)([flat_args[k] for k in dense_ids], deltas)
    dense_grads = mean_grads(dense_grads)
    rows = {}
    for leaf in plan.tables:
        paths = [p for p, look in plan.lookups.items() if look.leaf == leaf]
        row_shape = flat_args[leaf].shape[1:]
        ids = jnp.concatenate([reads[p].reshape(-1) for p in paths])
        grads = jnp.concatenate([row_grads[p].reshape((-1,) + row_shape) for p in paths])
        all_ids, all_grads = gather_shards(ids), gather_shards(grads)
        shards = all_ids.shape[0] // ids.shape[0]
        rows[leaf] = (all_ids, all_grads / shards)
    params, opt_state = tx.update_rows(dict(zip(dense_ids, dense_grads)), rows, opt_state,
                                       params)
    sums = dict(sums)
    sums["nonfinite"] = (~jnp.isfinite(loss)).astype(jnp.float32)
    return params, opt_state, sum_metrics(sums)
