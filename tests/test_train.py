"""The pmapped step on fake devices, and the main command end to end: outputs,
resume after SIGKILL / SIGTERM, NaN handling and config typos.

Runs of `python -m rec_jax.main` are subprocesses on one CPU device (the
step's multi-device behaviour is checked in-process on 4 fake devices), with
ml-100k read from the repo's data/ folder so it is prepared only once.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import NUM_FAKE_DEVICES, REPO_ROOT, ndcg_from_csvs, subprocess_env
from configs import common
from rec_jax.data.pipeline import TrainPipeline
from rec_jax.data.sources import NegativeSampler, PairSource
from rec_jax.train import optim, step as step_lib

# ---------------------------------------------------------------------------
# (a) 4 devices == 1 device for the same global batch.
# ---------------------------------------------------------------------------


def _bpr_mf_loss(params, batch, side, frozen, rng):
    """BPR-MF written out here, so this test depends on the step alone."""
    del side, frozen, rng
    u = params["user"][batch["user"]]
    pos = (u * params["item"][batch["item"]]).sum(-1)
    neg = jnp.einsum("bd,bnd->bn", u, params["item"][batch["negatives"]])
    loss = -jax.nn.log_sigmoid(pos[:, None] - neg).mean()
    n = jnp.asarray(batch["user"].shape[0], jnp.float32)
    return loss, {"loss": loss * n, "examples": n}


def test_pmapped_step_matches_one_device(ml100k_ratio):
    """The production step on 4 devices vs the same step pmapped over 1 device.

    Both see the same global batch of 4 x 32 examples; pmean of 4 device-mean
    gradients must equal the gradient of the 128-example mean, so parameters
    and loss sums agree to float rounding over several Adam steps.
    """
    data = ml100k_ratio
    side = {"item_year": np.zeros(data.num_items, np.int32)}  # replicated like real side tables
    init = jax.random.split(jax.random.PRNGKey(0))
    params = {"user": 0.1 * jax.random.normal(init[0], (data.num_users, 16)),
              "item": 0.1 * jax.random.normal(init[1], (data.num_items, 16))}
    tx = optim.make_optimizer(common.optim_section(lr=0.01), total_steps=100)
    key = jax.random.PRNGKey(1)
    source = PairSource(data, NegativeSampler(data), num_negatives=2)
    pipeline = TrainPipeline(source, 32, seed=0, engine="numpy")
    assert pipeline.local_devices == NUM_FAKE_DEVICES
    batches = [pipeline.host_batch(s) for s in range(3)]

    # 4 devices: exactly what the trainer runs.
    p_step = step_lib.make_pmapped_step(_bpr_mf_loss, tx)
    state4 = step_lib.replicate(step_lib.init_state(params, tx))
    side4, frozen4 = step_lib.replicate(side), step_lib.replicate(None)
    # 1 device: the same train_step, the whole global batch on one device.
    one = jax.pmap(functools.partial(step_lib.train_step, loss_fn=_bpr_mf_loss, tx=tx),
                   axis_name=step_lib.AXIS, in_axes=(0, 0, 0, 0, None),
                   devices=jax.devices()[:1])
    add_axis = lambda t: jax.tree.map(lambda x: np.asarray(x)[None], t)  # noqa: E731
    state1 = add_axis(step_lib.init_state(params, tx))
    side1 = add_axis(side)

    for k, batch in enumerate(batches):
        state4, sums4 = p_step(state4, batch, side4, frozen4, key)
        flat = jax.tree.map(lambda x: x.reshape((1, -1) + x.shape[2:]), batch)
        state1, sums1 = one(state1, flat, side1, None, key)
        sums4, sums1 = step_lib.unreplicate(sums4), step_lib.unreplicate(sums1)
        assert sums4["examples"] == sums1["examples"] == 4 * 32
        assert sums4["nonfinite"] == 0
        np.testing.assert_allclose(sums4["loss"], sums1["loss"], rtol=1e-5)
        if k == 0:  # Independent check: the plain loss of the global batch.
            loss, _ = _bpr_mf_loss(params, jax.tree.map(lambda x: x[0], flat), side, None, key)
            np.testing.assert_allclose(sums4["loss"], float(loss) * 128, rtol=1e-5)
    # Every replica holds the same parameters (grads were averaged across devices).
    for leaf in jax.tree.leaves(jax.device_get(state4.params)):
        for d in range(1, NUM_FAKE_DEVICES):
            np.testing.assert_array_equal(leaf[d], leaf[0])
    moved = 0.0
    for a, b, start in zip(jax.tree.leaves(step_lib.unreplicate(state4.params)),
                           jax.tree.leaves(step_lib.unreplicate(state1.params)),
                           jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        moved += float(np.abs(a - np.asarray(start)).max())
    assert moved > 1e-3  # the steps did change the parameters
    assert int(step_lib.unreplicate(state4.step)) == 3


# ---------------------------------------------------------------------------
# The main command.
# ---------------------------------------------------------------------------

# Shrunk for the resume tests: 312 steps per epoch (batch 256), 3 epochs, a
# checkpoint every 100 steps besides the one at each evaluation.
RESUME_FLAGS = ("--config.models=mf", "--config.model.mf.train.epochs=3",
                "--config.model.mf.train.batch_size_per_device=256",
                "--config.model.mf.train.checkpoint_every_steps=100")
TOTAL_STEPS = 3 * 312


def _command(workdir, flags):
    return [sys.executable, "-m", "rec_jax.main", "--config=configs/ml100k_mf.py:tiny",
            f"--workdir={workdir}", "--config.progress=off",
            f"--config.data.data_dir={REPO_ROOT / 'data'}", *flags]


def run_main(workdir, *flags, timeout=180):
    return subprocess.run(_command(workdir, flags), cwd=REPO_ROOT, env=subprocess_env(1),
                          capture_output=True, text=True, timeout=timeout)


def start_main(workdir, *flags):
    log = open(os.path.join(os.path.dirname(workdir), f"{os.path.basename(workdir)}.log"), "w")
    proc = subprocess.Popen(_command(workdir, flags), cwd=REPO_ROOT, env=subprocess_env(1),
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    return proc, log


def checkpoint_steps(workdir, model="mf"):
    """Committed checkpoint steps (Orbax renames a finished save to its step number)."""
    folder = os.path.join(workdir, model, "ckpt")
    if not os.path.isdir(folder):
        return []
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def wait_for_checkpoint(proc, workdir, min_step, log, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [s for s in checkpoint_steps(workdir) if s >= min_step]
        if steps:
            return steps[-1]
        if proc.poll() is not None:
            log.flush()
            with open(log.name) as f:
                raise AssertionError(f"run exited ({proc.returncode}) before a checkpoint "
                                     f">= {min_step}:\n{f.read()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint >= {min_step} in {timeout}s")


def _ok(out):
    assert out.returncode == 0, (out.returncode, out.stdout[-3000:], out.stderr[-5000:])
    return out


def load_results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def valid_log(workdir, model="mf"):
    with open(os.path.join(workdir, model, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steps = [r["step"] for r in records]
    keys = [(r["step"], r["kind"]) for r in records]
    assert steps == sorted(steps) and len(set(keys)) == len(keys), (
        "metrics.jsonl repeats or reorders steps")
    return [{k: v for k, v in r.items() if k != "time"} for r in records if r["kind"] == "valid"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run with RESUME_FLAGS: what every resumed run must reproduce."""
    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    _ok(run_main(workdir, *RESUME_FLAGS))
    return workdir


def _same_results(workdir, reference):
    got, want = load_results(workdir)["mf"], load_results(reference)["mf"]
    # Bitwise: same batches, same RNG, same float ops on CPU.
    assert got["valid"] == want["valid"]
    assert got["test"] == want["test"]
    for key in ("best_step", "steps_done", "stopped_early"):
        assert got["info"][key] == want["info"][key], key
    assert got["info"]["steps_done"] == TOTAL_STEPS
    assert valid_log(workdir) == valid_log(reference)


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_results(tmp_path, reference_run):
    workdir = str(tmp_path / "run")
    proc, log = start_main(workdir, *RESUME_FLAGS)
    try:
        # Past the first evaluation (step 312) and on a mid-epoch checkpoint.
        wait_for_checkpoint(proc, workdir, min_step=400, log=log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    latest = checkpoint_steps(workdir)[-1]
    assert 400 <= latest < TOTAL_STEPS, "the kill did not land mid-training"
    assert not os.path.exists(os.path.join(workdir, "mf", "results.json"))
    out = _ok(run_main(workdir, *RESUME_FLAGS))
    assert f"step {TOTAL_STEPS}/{TOTAL_STEPS}" in out.stdout
    _same_results(workdir, reference_run)


@pytest.mark.slow
def test_sigterm_saves_and_exits_then_resume_survives_a_nan_attempt(tmp_path, reference_run):
    """SIGTERM saves a checkpoint and exits; a NaN run then stops without
    touching it; resuming from it still ends exactly where the reference ends."""
    workdir = str(tmp_path / "run")
    proc, log = start_main(workdir, *RESUME_FLAGS)
    try:
        first = wait_for_checkpoint(proc, workdir, min_step=100, log=log)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    with open(log.name) as f:
        text = f.read()
    assert proc.returncode not in (0, -signal.SIGTERM), text[-3000:]  # exited by itself
    match = re.search(r"SIGTERM: checkpoint saved at step (\d+)", text)
    assert match, text[-3000:]
    saved = int(match.group(1))
    assert first <= saved < TOTAL_STEPS and checkpoint_steps(workdir)[-1] == saved
    assert not os.path.exists(os.path.join(workdir, "mf", "results.json"))

    # (e) A NaN loss: an absurd learning rate makes the very next steps blow up.
    before = checkpoint_steps(workdir)
    out = run_main(workdir, *RESUME_FLAGS, "--config.model.mf.optim.lr=1e30")
    assert out.returncode != 0
    assert "NonFiniteLoss" in out.stderr and "NaN/inf" in out.stderr, out.stderr[-3000:]
    assert f"last good checkpoint is step {saved}" in out.stderr
    assert checkpoint_steps(workdir) == before  # nothing was saved after the NaN
    assert not os.path.exists(os.path.join(workdir, "mf", "results.json"))

    # Resume from the SIGTERM checkpoint with the original config.
    _ok(run_main(workdir, *RESUME_FLAGS))
    _same_results(workdir, reference_run)


def test_unknown_config_key_is_refused(tmp_path):
    out = run_main(str(tmp_path / "run"), "--config.model.mf.no_such_key=1", timeout=60)
    assert out.returncode != 0
    assert "no_such_key" in out.stderr
    assert not os.path.exists(tmp_path / "run")  # refused before anything ran


def _rows(path):
    with open(path) as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_end_to_end_tiny_run_writes_every_output(tmp_path, ml100k):
    workdir = tmp_path / "tiny"
    out = _ok(run_main(str(workdir), "--config.eval.timings=true"))  # (off in tiny configs)
    assert (workdir / "COMPLETE").exists()
    results = load_results(str(workdir))
    assert list(results) == ["pop", "mf"]
    assert all(results[m]["info"]["score_ms_per_user"] > 0 for m in ("pop", "mf"))
    for model in ("pop", "mf"):
        for part in ("valid", "test"):
            m = results[model][part]
            assert m["users"] > 900
            for key in ("recall@10", "ndcg@10", "hr@10", "mrr@10", "ndcg@20",
                        "head/ndcg@10", "tail/ndcg@10"):
                assert 0.0 <= m[key] <= 1.0, (model, part, key)
        # Popularity and a short BPR-MF both beat random ranking by far.
        assert results[model]["test"]["ndcg@10"] > 0.05
        assert results[model]["info"]["num_params"] >= 0
        # recs/truth CSVs: original ids, top 20, and NDCG@10 recomputable from them.
        for part in ("valid", "test"):
            recs = _rows(workdir / model / f"recs_{part}.csv")
            truth = _rows(workdir / model / f"truth_{part}.csv")
            assert recs[0] == ["user_id", "rank", "item_id", "score"]
            assert truth[0] == ["user_id", "item_id"]
            assert len(recs) - 1 == 20 * results[model][part]["users"]
            assert set(r[2] for r in recs[1:]) <= set(ml100k.item_ids)
        recomputed = ndcg_from_csvs(workdir / model / "recs_test.csv",
                                    workdir / model / "truth_test.csv")
        assert recomputed == pytest.approx(results[model]["test"]["ndcg@10"], abs=1e-5)
    assert results["mf"]["info"]["num_params"] > 943 + 1682
    assert results["mf"]["info"]["steps_done"] > 0
    # The split CSVs partition the ratings, in original ids.
    split_rows = {part: _rows(workdir / "split" / f"{part}.csv") for part in
                  ("train", "valid", "test")}
    assert all(r[0] == ["user_id", "item_id", "rating", "timestamp"] for r in split_rows.values())
    assert sum(len(r) - 1 for r in split_rows.values()) == 100_000
    # Logs: metrics.jsonl with train and valid records, a TensorBoard file, the report.
    records = [json.loads(line) for line in open(workdir / "mf" / "metrics.jsonl")]
    assert {"train", "valid"} <= {r["kind"] for r in records}
    assert all(np.isfinite(r["loss"]) for r in records if r["kind"] == "train")
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(workdir / "mf" / "tb"))
    report = (workdir / "report.md").read_text()
    assert "| pop |" in report and "| mf |" in report and "NDCG@10" in report
    assert f"{results['mf']['test']['ndcg@10']:.4f}" in report
    assert "| mf |" in out.stdout
    run_json = json.loads((workdir / "run.json").read_text())
    assert run_json["config"]["models"] == "pop,mf" and run_json["config"]["progress"] == "off"
    # A rerun of a finished job reuses the results instead of training again.
    again = _ok(run_main(str(workdir)))
    assert "finished earlier" in again.stdout
    assert load_results(str(workdir)) == results


# ---------------------------------------------------------------------------
# (f) train.min_epochs: patience cannot stop a run before it.
# ---------------------------------------------------------------------------


def test_min_epochs_holds_off_early_stopping(ml100k_ratio, tmp_path):
    """With lr 0 the validation metric never improves after the first evaluation,
    so patience 1 stops at the second one; min_epochs moves the stop to the first
    evaluation at or after it, and the best step stays the first evaluation."""
    from configs import ml100k_mf

    from rec_jax import recipes
    from rec_jax import run as run_lib
    from rec_jax.train import trainer

    data = ml100k_ratio
    config = ml100k_mf.get_config("tiny")
    side = run_lib.build_side(config, data, ["mf"])
    spec = recipes.model_spec("mf", config, data, side)
    evaluator = run_lib.make_evaluator(data, "valid", config, spec,
                                       users=np.arange(64, dtype=np.int32))
    steps = {}
    for min_epochs in (0.0, 3.0):
        cfg = recipes.model_config(config, "mf")
        cfg.optim.update(name="sgd", lr=0.0)
        cfg.train.update(epochs=10.0, batch_size_per_device=8192, eval_every_epochs=1.0,
                         patience=1, min_epochs=min_epochs, input_engine="numpy")
        fitted = trainer.fit(spec, cfg, side, str(tmp_path / f"min{min_epochs}"), evaluator,
                             0, "off")
        per_epoch = fitted.meta["history"][0]["step"]
        assert fitted.meta["stopped_early"] and fitted.meta["best_step"] == per_epoch
        steps[min_epochs] = fitted.meta["steps_done"] // per_epoch
    assert steps == {0.0: 2, 3.0: 3}
