"""Full-ranking evaluation speed: the real ``Evaluator``, all test users x all items."""

from __future__ import annotations

import time

import jax

from rec_jax.bench.machine import median_ms


def eval_throughput(config, data, side, repeats: int, models=("mf", "sasrec", "deepfm")) -> dict:
    """Seconds of one full-ranking pass per model, at two user batch sizes, with and
    without keeping the recommendation lists.

    Returns:
      "<model> batch <users>[ +recs]" -> users, items, seconds (median after
      the first, compiling call) and users/s.
    """
    from rec_jax import recipes
    from rec_jax.eval.evaluator import Evaluator
    out = {}
    for name in models:
        spec = recipes.model_spec(name, config, data, side)
        params = spec.init(jax.random.PRNGKey(0))
        for batch_users in (config.eval.batch_users, 1024):
            ev = Evaluator(data, "test", config.eval.ks, batch_users, config.eval.num_recs)
            for keep in (False, True):
                def go():
                    return ev.evaluate(spec.score_fn, params, side, spec.make_query,
                                       keep_recs=keep)[0]
                t = time.perf_counter()
                go()
                compile_s = time.perf_counter() - t
                ms = median_ms(go, repeats)
                out[f"{name} batch {batch_users}{' +recs' if keep else ''}"] = {
                    "model": name, "users": len(ev.users), "items": data.num_items,
                    "batch_users": batch_users, "keep_recs": keep, "seconds": ms / 1000,
                    "users_per_s": len(ev.users) / (ms / 1000), "first_call_s": compile_s}
    return out


def part(workload, config, repeats: int, models) -> dict:
    """The ``eval`` part on ml-100k: results' ``eval`` entry."""
    data, side, _ = workload.get("ml100k")
    out = eval_throughput(config, data, side, repeats, tuple(models))
    print("[eval] " + ", ".join(f"{k}: {v['seconds']:.4f} s" for k, v in out.items()),
          flush=True)
    return {"eval": out}
