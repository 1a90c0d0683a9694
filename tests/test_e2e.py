"""One end-to-end smoke run of the main job on its `tiny` config.

    python -m rec_jax.main --config=configs/ml100k_distill.py:tiny --workdir=W

as a subprocess on one CPU device (ml-100k and the BERT text cache come from
the repo's data/ folder), then `--stage=eval` on the same workdir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import DATA_DIR, REPO_ROOT, subprocess_env

# Subprocess jobs: `make test-fast` (-m 'not slow') skips them.
pytestmark = pytest.mark.slow

MODELS = ("teacher", "mf", "mf_kd", "sasrec", "sasrec_kd", "deepfm", "deepfm_kd")
ARTIFACT_KEYS = {"user_vec", "item_vec", "item_bias", "topk_items", "topk_scores", "ctr_prob",
                 "genre_prob", "version", "fingerprint", "temperature"}
RANKING = ("ndcg@10", "recall@10", "hr@10", "mrr@10", "ndcg@20", "recall@20")


def _main(workdir, *extra):
    cmd = [sys.executable, "-m", "rec_jax.main", "--config=configs/ml100k_distill.py:tiny",
           f"--workdir={workdir}", "--config.progress=off", f"--config.data.data_dir={DATA_DIR}",
           *extra]
    t = time.time()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=subprocess_env(1), capture_output=True,
                          text=True, timeout=1500, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-5000:]}"
    print(f"\n{' '.join(cmd[2:])}: {time.time() - t:.0f} s")
    return proc.stdout


def _read(path):
    with open(path) as f:
        return json.load(f)


def test_main_job_tiny_end_to_end(tmp_path):
    workdir = str(tmp_path / "distill")
    stdout = _main(workdir)  # (timings off in tiny runs: tests/test_train.py times pop and MF)

    # --------------------------------------------------------------- results
    results = _read(os.path.join(workdir, "results.json"))
    assert set(results) == set(MODELS) | {"ease"}  # EASE: the reference row (no training)
    ease = results["ease"]
    assert 0.0 < ease["test"]["ndcg@10"] <= 1.0 and ease["info"]["l2"] > 0
    # λ is chosen on the students' half of the validation users (eval.selection=halves).
    assert ease["valid_selection"]["ndcg@10"] == max(ease["info"]["valid_ndcg@10_by_l2"].values())
    assert ease["valid_selection"]["ndcg@10"] != ease["valid"]["ndcg@10"]
    for name in MODELS:
        entry = results[name]
        assert {"valid", "valid_selection", "test", "info"} <= set(entry), name
        for part in ("valid", "test"):
            for metric in RANKING:
                assert 0.0 <= entry[part][metric] <= 1.0, (name, part, metric)
            assert entry[part]["recall@10"] <= entry[part]["recall@20"] + 1e-9
        assert entry["info"]["num_params"] > 0 and "score_ms_per_user" not in entry["info"]
        assert entry == _read(os.path.join(workdir, name, "results.json"))
        assert os.path.exists(os.path.join(workdir, name, "recs_test.csv"))
    # The tiny teacher is barely trained, but the students must have learned something.
    assert results["mf"]["test"]["ndcg@10"] > 0
    for name in MODELS[1:]:
        if name.endswith("_kd"):
            test = results[name]["test"]
            assert 0.0 <= test["agree/top10_overlap"] <= 1.0, name
            assert np.isfinite(test["agree/kl"]) and test["agree/kl"] >= 0, name
            # A KD student serves with its student params only: same size as the plain one.
            assert (results[name]["info"]["num_params"]
                    == results[name[:-3]]["info"]["num_params"]), name
    for name in ("deepfm", "deepfm_kd", "teacher"):
        test = results[name]["test"]
        assert 0.0 <= test["auc"] <= 1.0 and test["logloss"] > 0, name
    # The teacher's trained params and its frozen BERT are counted apart.
    teacher_info = results["teacher"]["info"]
    assert teacher_info["num_params_frozen"] > 10 * results["mf"]["info"]["num_params"]
    assert 0 < teacher_info["num_params"] < teacher_info["num_params_frozen"]
    # Per-user metrics for paired tests; strict users for loo_time; the
    # history readers' train-only-history score.
    for name in ("mf", "mf_kd", "teacher"):
        assert "strict/ndcg@10" in results[name]["test"]
        assert os.path.exists(os.path.join(workdir, name, "per_user_test.npz"))
    for name in ("teacher", "sasrec", "sasrec_kd"):
        assert 0.0 <= results[name]["test_train_history"]["ndcg@10"] <= 1.0

    # ---------------------------------------------------------------- report
    with open(os.path.join(workdir, "report.md")) as f:
        report = f.read()
    assert "| model |" in report and "NDCG@10" in report
    assert "Paired tests over users" in report and "| mf_kd | mf | ndcg@10 |" in report
    for name in MODELS:
        assert f"| {name} |" in report, name
    assert "| teacher |" in stdout  # the table is printed at the end too

    # ------------------------------------------------------ teacher artifacts
    with np.load(os.path.join(workdir, "teacher", "artifacts.npz")) as f:
        assert set(f.files) == ARTIFACT_KEYS
        assert f["user_vec"].shape[0] == 943 and f["item_vec"].shape[0] == 1682
        assert f["topk_items"].shape == (943, 50)
    assert os.path.exists(os.path.join(workdir, "COMPLETE"))

    # --------------------------------------------------------- re-evaluation
    # (Three of the models: one of each kind of checkpoint, a teacher, a KD
    # student and a sequential one; every model takes the same path.)
    evaluated = ("teacher", "mf_kd", "sasrec")
    before = {n: os.stat(os.path.join(workdir, n, "results.json")).st_mtime_ns for n in MODELS}
    _main(workdir, "--stage=eval", f"--config.models={','.join(evaluated)}")
    again = _read(os.path.join(workdir, "results.json"))
    assert set(evaluated) <= set(again)
    for name in evaluated:
        assert os.stat(os.path.join(workdir, name, "results.json")).st_mtime_ns > before[name]
        for metric, value in results[name]["test"].items():
            np.testing.assert_allclose(again[name]["test"][metric], value, rtol=1e-6,
                                       err_msg=f"{name} {metric}")
        # Training was not redone: the same best checkpoint was evaluated.
        assert again[name]["info"]["best_step"] == results[name]["info"]["best_step"]


COLD_MODELS = ("teacher", "mf", "mf_kd", "mf_kd_transfer", "mf_kd_transfer_fusion")


def test_coldstart_job_tiny_end_to_end(tmp_path):
    """configs/ml100k_coldstart.py:tiny with the fused student sharing the
    teacher's text projection: the whole-profile teacher (what `auto` picks on
    cold_items), KD, transfer, fusion and the label-fraction sweep in one run."""
    import flax.serialization

    workdir = str(tmp_path / "coldstart")
    cmd = [sys.executable, "-m", "rec_jax.main", "--config=configs/ml100k_coldstart.py:tiny",
           f"--workdir={workdir}", "--config.progress=off", f"--config.data.data_dir={DATA_DIR}",
           "--config.transfer.share=text_proj", "--config.fusion.source=text"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=subprocess_env(1), capture_output=True,
                          text=True, timeout=1200, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    for folder in (workdir, os.path.join(workdir, "fraction_0.25")):
        results = _read(os.path.join(folder, "results.json"))
        assert set(results) == set(COLD_MODELS) | {"ease"}, folder
        for name in COLD_MODELS:
            test = results[name]["test"]
            for metric in ("ndcg@10", "cold/recall@10", "cold_only/recall@10"):
                assert 0.0 <= test[metric] <= 1.0, (folder, name, metric)
        # The students learned something; the fused one ranks cold items from text.
        assert results["mf"]["test"]["ndcg@10"] > 0
        assert results["mf_kd_transfer_fusion"]["test"]["cold_only/recall@10"] > 0
    with open(os.path.join(workdir, "teacher", "params.msgpack"), "rb") as f:
        teacher = flax.serialization.msgpack_restore(f.read())
    assert "bag_item_id" in teacher and "position" not in teacher["history"]  # profile tower
    assert os.path.exists(os.path.join(workdir, "plots", "ndcg_vs_label_fraction.png"))

    # The fused student served with its cold items held out, the cold items
    # added back through POST /items (text path: frozen BERT in the bundle),
    # scores through the service as offline (rec_jax.deploy.cold_check).
    # (In process: the check reads the workdir through its run.json, as export does.)
    from rec_jax.deploy import cold_check

    check = cold_check.run(workdir, "mf_kd_transfer_fusion", str(tmp_path / "bundle"))
    assert check["ok"] and check["cold_items"] == 168 and check["users"] > 500, check
    assert check["rows"]["cold_only/recall@10"][0] > 0
