"""Serving latency: ranking the whole catalogue (scores + top k), MF vs the teacher."""

from __future__ import annotations

import copy
import json

import jax
import numpy as np

from rec_jax.bench.machine import median_ms


def serving_bench(config, data, side_fn, repeats: int, k: int = 20) -> dict:
    """Latency of ranking the full catalogue (scores + top k) for 1 and 1,024 users.

    Two call forms, each a median after compilation:

    * ``args``: ``jit(fn)(params, query, side)``, as ``run.serving_ms`` times
      it (every parameter and side table crosses the call boundary);
    * ``served``: weights and side tables closed over (loaded once, as a
      server holds them), only the request (user ids, and the history for
      the teacher) passed per call.

    The teacher serves with its item-text vectors computed offline (the
    frozen-encoder form, whatever `teacher.freeze` trained it: a fine-tuned
    BERT's item vectors are precomputed the same way), while a user's profile
    text is encoded by BERT per request and timed separately and added
    (``run.bert_user_text_ms``'s honest cost).

    Args:
      side_fn: (model names, config) -> their side tables.
    """
    from rec_jax import recipes
    from rec_jax.data import text as text_lib
    from rec_jax.models import bert as bert_lib
    config = copy.deepcopy(config)
    config.teacher.freeze = "encoder"
    side = side_fn(["mf", "teacher"], config)
    big_repeats = max(2, repeats // 5)  # a 1,024-user teacher call takes seconds on a CPU
    out: dict = {"k": k, "num_items": data.num_items, "repeats": repeats,
                 "repeats_1024": big_repeats}
    for name in ("mf", "teacher"):
        spec = recipes.model_spec(name, config, data, side)
        params = jax.device_put(spec.init(jax.random.PRNGKey(0)))
        side_d = jax.device_put(side)

        @jax.jit
        def rank(params, query, side, score_fn=spec.score_fn):
            return jax.lax.top_k(score_fn(params, query, side), k)

        @jax.jit
        def served(query, score_fn=spec.score_fn, params=params, side=side_d):
            return jax.lax.top_k(score_fn(params, query, side), k)
        for batch in (1, 1024):
            users = (np.arange(batch) % data.num_users).astype(np.int32)
            query = spec.make_query(users, "test")
            n = repeats if batch == 1 else big_repeats
            jax.block_until_ready(rank(params, query, side_d))
            out[f"{name}_args_ms_{batch}"] = median_ms(lambda: rank(params, query, side_d), n)
            jax.block_until_ready(served(query))
            out[f"{name}_rank_ms_{batch}"] = median_ms(lambda: served(query), n)
    # The teacher's honest cost: a user's profile text goes through BERT first.
    cfg = config.teacher
    model, variables, tokenizer = bert_lib.load_pretrained(cfg.bert_path or None)
    variables = jax.device_put(variables)
    texts = text_lib.user_texts(data.dataset)

    @jax.jit
    def encode(tokens):
        h = model.apply(variables, tokens["input_ids"], tokens["attention_mask"],
                        tokens["token_type_ids"])["last_hidden_state"]
        return bert_lib.mean_pool(h, tokens["attention_mask"])
    for batch in (1, 1024):
        batch_texts = [texts[u % len(texts)] for u in range(batch)]
        tokens = text_lib.tokenize(tokenizer, batch_texts, cfg.user_text_len)
        jax.block_until_ready(encode(tokens))
        out[f"teacher_bert_user_text_ms_{batch}"] = median_ms(
            lambda: encode(tokens), repeats if batch == 1 else big_repeats)
        for form in ("rank", "args"):
            total = out[f"teacher_{form}_ms_{batch}"] + out[f"teacher_bert_user_text_ms_{batch}"]
            out[f"teacher_total_{form}_ms_{batch}"] = total
            out[f"speedup_{form}_{batch}"] = total / out[f"mf_{form}_ms_{batch}"]
        out[f"teacher_total_ms_{batch}"] = out[f"teacher_total_rank_ms_{batch}"]
        out[f"speedup_{batch}"] = out[f"speedup_rank_{batch}"]
    return out


def part(workload, config, quick: bool) -> dict:
    """The ``serving`` part on ml-100k: results' ``serving`` entry."""
    data, _, _ = workload.get("ml100k")
    out = serving_bench(config, data, workload.side, 10 if quick else 30)
    print(f"[serving] {json.dumps(out, default=float)}", flush=True)
    return {"serving": out}
