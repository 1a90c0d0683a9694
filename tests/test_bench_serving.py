"""The serving benchmark's mechanics on ml-100k with few calls (not its speed)."""

import numpy as np
import pytest

from configs import common
from rec_jax.bench import report, serving
from rec_jax.data import features

HIDDEN = 384  # MiniLM's width: the teacher's text projections read vectors this wide


def _side_fn(data):
    """Side tables with random text vectors in place of the frozen BERT's (no weights read)."""
    def side_fn(names, config):
        del names, config
        rng = np.random.default_rng(0)
        side = features.side_features(data.dataset, data.dataset.item[data.split.train])
        side["item_text"] = rng.normal(size=(data.num_items, HIDDEN)).astype(np.float32)
        side["user_text"] = rng.normal(size=(data.num_users, HIDDEN)).astype(np.float32)
        return side
    return side_fn


def test_serving_bench_returns_what_the_report_reads(ml100k_ratio):
    config = common.shrink(common.base_config())
    # 16 users stand for the benchmark's 1,024: the same code path, less compute.
    out = serving.serving_bench(config, ml100k_ratio, _side_fn(ml100k_ratio), calls=3,
                                batches=(1, 16), args_calls=2, bert_profile=False)
    for batch in (1, 16):
        for name in serving.MODELS:
            p50, p99 = out[f"{name}_p50_ms_{batch}"], out[f"{name}_p99_ms_{batch}"]
            assert 0 < out[f"{name}_min_ms_{batch}"] <= p50 <= p99
            assert out[f"{name}_args_p50_ms_{batch}"] > 0
        for stat in ("p50", "p99"):
            assert out[f"speedup_{stat}_{batch}"] == pytest.approx(
                out[f"teacher_{stat}_ms_{batch}"] / out[f"mf_{stat}_ms_{batch}"])
    assert out["num_items"] == ml100k_ratio.num_items and out["calls"] == 3
    # The report's section and its target row render from these keys alone.
    section = "\n".join(report._serving(out))
    assert "cached user text" in section and "| 16 |" in section
    target = next(t for t in report.evaluate_targets({"serving": out})
                  if "like for like" in t["target"])
    assert target["met"] == (out["speedup_p50_1"] >= 100 and out["speedup_p99_1"] >= 100)


@pytest.mark.slow
def test_serving_bench_times_bert_over_profile_text(ml100k_ratio):
    """The older, not like-for-like figure: the teacher plus BERT over the user's text."""
    from rec_jax.models import bert
    try:
        bert.default_bert_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    config = common.shrink(common.base_config())
    out = serving.serving_bench(config, ml100k_ratio, _side_fn(ml100k_ratio), calls=2,
                                batches=(1,), args_calls=0, bert_repeats=(1,))
    assert out["teacher_bert_user_text_ms_1"] > 0
    assert out["teacher_with_bert_p50_ms_1"] == pytest.approx(
        out["teacher_p50_ms_1"] + out["teacher_bert_user_text_ms_1"])
    assert "(" in "\n".join(report._serving(out))
