"""The benchmark's mechanics (not its speed: speed lives in `python -m rec_jax.bench`)."""

import json
import math

import pytest

from conftest import DATA_DIR

from rec_jax.bench import __main__ as cli
from rec_jax.bench import report, train


def test_growth_exponent_reads_the_slope_between_smallest_and_largest():
    # Epoch time proportional to size -> exponent 1; to size^2 -> 2.
    assert math.isclose(train.growth_exponent([(100, 1.0), (1000, 10.0), (10_000, 100.0)]), 1.0)
    assert math.isclose(train.growth_exponent([(10, 4.0), (100, 400.0)]), 2.0)
    # Unordered points, a failed size (None) ignored; one point is not a slope.
    assert math.isclose(train.growth_exponent([(1000, 10.0), (10, None), (100, 1.0)]), 1.0)
    assert train.growth_exponent([(100, 1.0)]) is None


@pytest.mark.slow
def test_quick_bench_writes_json_table_and_judges_targets(tmp_path):
    out = tmp_path / "bench.json"
    res = cli.main(["--quick", "--parts", "train,eval", "--models", "mf", "--repeats", "1",
                      "--max_steps", "20", "--data_dir", str(DATA_DIR), "--out", str(out)])
    saved = json.loads(out.read_text())
    mf = saved["train"]["ml100k"]["models"]["mf"]
    assert mf["examples_per_s"] > 0 and mf["epoch_s"] > 0
    assert saved["train"]["ml100k"]["data"]["users"] == 943
    assert all(v["seconds"] > 0 for v in saved["eval"].values())
    # The 500k ex/s target is judged from the measured figure, both ways.
    target = next(t for t in res["targets"] if t["target"].startswith("MF training"))
    assert target["met"] == (mf["examples_per_s"] >= 500_000)
    table = report.markdown(saved)
    assert "Student training" in table and "| mf |" in table.replace("  ", " ")
