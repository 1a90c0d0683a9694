"""Serving latency: ranking the whole catalogue (scores + top k), MF vs the teacher.

Like for like: each model serves from one jitted function with its weights and
side tables (the item table; the teacher's item and user text vectors, which
the frozen BERT computed offline) closed over, as a server holds them; only
the request (user ids, and the history the teacher reads) crosses the call.
Neither runs BERT per request. Each call is timed on its own (blocking on the
result) over ``calls`` calls after a warm-up, MF and teacher calls alternating
so a shared machine's load falls on both alike; p50 and p99 are reported.

Older figures, kept and labelled as such: the ``jit(params, query, side)``
call form (every weight crosses the call boundary, as ``run.serving_ms``
times it) and the teacher plus BERT over the user's profile text per request
(``run.bert_user_text_ms``), which is not like for like.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Callable, Sequence

import jax
import numpy as np

from rec_jax.bench.machine import load_average, median_ms

BATCHES = (1, 1024)
MODELS = ("mf", "teacher")


def served_fn(score_fn: Callable, params, side, k: int) -> Callable:
    """The server's ranking function: params and side tables closed over.

    Args:
        score_fn: (params, query, side) -> [B, num_items] scores.
        params, side: Device-resident pytrees, fixed for the server's life.
        k: Items returned per user.

    Returns:
        jitted query -> (scores [B, k], item ids [B, k]).
    """
    @jax.jit
    def recommend(query):
        return jax.lax.top_k(score_fn(params, query, side), k)
    return recommend


def interleaved_latencies_ms(fns: dict[str, Callable[[], object]], calls: int,
                             warmup: int = 5) -> dict[str, np.ndarray]:
    """Per-call wall milliseconds of each fn, the fns' calls alternating.

    Args:
        fns: name -> a compiled call (blocking on its result is done here).
        calls: Timed calls per fn.
        warmup: Untimed calls per fn first.

    Returns:
        name -> [calls] milliseconds.
    """
    for fn in fns.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    out = {name: np.empty(calls) for name in fns}
    for i in range(calls):
        for name, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            out[name][i] = time.perf_counter() - t
    return {name: 1000.0 * v for name, v in out.items()}


def _percentiles(ms: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean()), "min": float(ms.min())}


def serving_bench(config, data, side_fn, calls: int = 1000, k: int = 20,
                  batches: Sequence[int] = BATCHES, args_calls: int | None = None,
                  bert_profile: bool = True, bert_repeats: Sequence[int] = (20, 2)) -> dict:
    """Latency of ranking the full catalogue (scores + top k), MF vs the teacher.

    Args:
        config: The run's config; the teacher serves as ``teacher.freeze=encoder``
            (text vectors precomputed; a fine-tuned BERT's are precomputed the
            same way), whatever it trained with.
        data: Split data (ml-100k in the benchmark).
        side_fn: (model names, config) -> their side tables.
        calls: Timed calls per model and batch size (p50 / p99 over these).
        k: Items returned per user.
        batches: Users per request.
        args_calls: Calls for the older ``jit(params, query, side)`` form
            (default ``max(calls // 10, 3)``; 0 skips it).
        bert_profile: Also time BERT over the users' profile texts (the older,
            not like-for-like teacher cost); needs the BERT weights.
        bert_repeats: Its repeats at each batch size (median reported).

    Returns:
        Per model ``m`` and batch ``b``: ``{m}_p50_ms_{b}``, ``{m}_p99_ms_{b}``,
        ``{m}_mean_ms_{b}``, ``{m}_min_ms_{b}`` (served form), and
        ``{m}_args_p50_ms_{b}``; ``speedup_p50_{b}`` / ``speedup_p99_{b}`` =
        teacher / MF; with ``bert_profile``, ``teacher_bert_user_text_ms_{b}``,
        ``teacher_with_bert_p50_ms_{b}`` and ``speedup_with_bert_{b}``; and
        ``k``, ``num_items``, ``calls``, ``batches``, the load averages.
    """
    from rec_jax import recipes
    config = copy.deepcopy(config)
    config.teacher.freeze = "encoder"
    side = side_fn(list(MODELS), config)
    side_d = jax.device_put(side)
    args_calls = max(calls // 10, 3) if args_calls is None else args_calls
    out: dict = {"k": k, "num_items": data.num_items, "calls": calls, "args_calls": args_calls,
                 "batches": list(batches), "load_average_start": load_average()}
    specs, params = {}, {}
    for name in MODELS:
        specs[name] = recipes.model_spec(name, config, data, side)
        params[name] = jax.device_put(specs[name].init(jax.random.PRNGKey(0)))
    for batch in batches:
        users = (np.arange(batch) % data.num_users).astype(np.int32)
        served, with_args = {}, {}
        for name, spec in specs.items():
            query = spec.make_query(users, "test")  # host arrays: the request
            fn = served_fn(spec.score_fn, params[name], side_d, k)
            served[name] = lambda fn=fn, query=query: fn(query)
            rank = jax.jit(lambda p, q, s, score_fn=spec.score_fn:
                           jax.lax.top_k(score_fn(p, q, s), k))
            with_args[name] = (lambda rank=rank, p=params[name], query=query:
                               rank(p, query, side_d))
        for name, ms in interleaved_latencies_ms(served, calls).items():
            for stat, v in _percentiles(ms).items():
                out[f"{name}_{stat}_ms_{batch}"] = v
        if args_calls:
            for name, ms in interleaved_latencies_ms(with_args, args_calls).items():
                out[f"{name}_args_p50_ms_{batch}"] = _percentiles(ms)["p50"]
        for stat in ("p50", "p99"):
            out[f"speedup_{stat}_{batch}"] = (out[f"teacher_{stat}_ms_{batch}"]
                                              / out[f"mf_{stat}_ms_{batch}"])
    if bert_profile:
        out.update(_bert_profile_ms(config, data, batches, bert_repeats, out))
    out["load_average_end"] = load_average()
    return out


def _bert_profile_ms(config, data, batches, repeats, res) -> dict:
    """The older teacher cost: BERT over each user's profile text per request (median ms)."""
    from rec_jax.data import text as text_lib
    from rec_jax.models import bert as bert_lib
    cfg = config.teacher
    model, variables, tokenizer = bert_lib.load_pretrained(cfg.bert_path or None)
    variables = jax.device_put(variables)
    texts = text_lib.user_texts(data.dataset)

    @jax.jit
    def encode(tokens):
        h = model.apply(variables, tokens["input_ids"], tokens["attention_mask"],
                        tokens["token_type_ids"])["last_hidden_state"]
        return bert_lib.mean_pool(h, tokens["attention_mask"])
    out = {}
    for batch, n in zip(batches, repeats):
        tokens = text_lib.tokenize(tokenizer, [texts[u % len(texts)] for u in range(batch)],
                                   cfg.user_text_len)
        jax.block_until_ready(encode(tokens))
        bert_ms = median_ms(lambda: encode(tokens), n)
        out[f"teacher_bert_user_text_ms_{batch}"] = bert_ms
        total = res[f"teacher_p50_ms_{batch}"] + bert_ms
        out[f"teacher_with_bert_p50_ms_{batch}"] = total
        out[f"speedup_with_bert_{batch}"] = total / res[f"mf_p50_ms_{batch}"]
    return out


def part(workload, config, quick: bool) -> dict:
    """The ``serving`` part on ml-100k: results' ``serving`` entry."""
    data, _, _ = workload.get("ml100k")
    out = serving_bench(config, data, workload.side, calls=50 if quick else 1000,
                        bert_repeats=(5, 1) if quick else (20, 2))
    print(f"[serving] {json.dumps(out, default=float)}", flush=True)
    return {"serving": out}
