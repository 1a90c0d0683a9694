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


def test_variant_parsing_and_overrides():
    from configs import common
    v = train.parse_variant("sasrec_sampled=sasrec:model.sasrec.sampled_negatives=256,"
                            "model.sasrec.optim.sparse_tables=true")
    assert (v.label, v.model) == ("sasrec_sampled", "sasrec")
    config = train.with_overrides(common.base_config(), v.overrides)
    assert config.model.sasrec.sampled_negatives == 256  # coerced to the key's int
    assert config.model.sasrec.optim.sparse_tables is True
    assert common.base_config().model.sasrec.sampled_negatives == 0  # a copy was changed
    assert train.sparse_variant("mf").overrides == (("model.mf.optim.sparse_tables", True),)
    for bad in ("no_model", "x=sasrec", "x=sasrec:", "x=sasrec:key"):
        with pytest.raises(ValueError, match="LABEL=MODEL"):
            train.parse_variant(bad)
    with pytest.raises(KeyError, match="nope"):
        train.with_overrides(common.base_config(), (("model.sasrec.nope", "1"),))
    with pytest.raises(ValueError, match="boolean"):
        train.with_overrides(common.base_config(), (("model.mf.optim.sparse_tables", "yes"),))


def test_bench_refuses_a_bad_variant_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--parts", "train", "--variant", "x=mf:model.mf.nope=1"])
    assert "model.mf.nope" in str(e.value) and "\n" not in str(e.value)


def test_growth_target_is_judged_per_student_on_its_best_row():
    res = {"train": {"ml100k": {"data": {}, "models": {}},
                     "10m": {"data": {"interactions": 10_000_000}, "models": {}}},
           "epoch_growth": {"mf": 1.49, "mf_mesh": 1.55, "mf_sparse": 0.98, "sasrec": 1.21,
                            "sasrec_sampled": 1.04},
           "row_family": {"mf": "mf", "mf_mesh": "mf", "mf_sparse": "mf", "sasrec": "sasrec",
                          "sasrec_sampled": "sasrec"}}
    targets = {t["target"].split()[0]: t for t in report.evaluate_targets(res)
               if "growth" in t["target"]}
    assert set(targets) == {"mf", "sasrec"}
    assert targets["mf"]["met"] and "(mf_sparse)" in targets["mf"]["measured"]
    assert "mf 1.49" in targets["mf"]["measured"]  # the other rows are still shown
    assert not targets["sasrec"]["met"] and "1.04 (sasrec_sampled)" in targets["sasrec"]["measured"]
