"""Tests for rec_jax.sweep: grids, launcher and report, with no training.

The launcher is driven with a fake main (a small script written into tmp_path)
that writes results.json / run.json / COMPLETE from its --config.* flags, logs
every call to a counter file, and fails when one of its flags is listed in
fail.txt.
"""

import csv
import json
import math

import numpy as np
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rec_jax import sweep
from rec_jax.sweep import __main__ as cli
from rec_jax.sweep import grid as grid_lib
from rec_jax.sweep import launch, report

SHIPPED_GRIDS = sorted((grid_lib.REPO_ROOT / "experiments").glob("*.py"))


def _config_keys(config_path: str) -> set[str]:
    """Every dotted key of a base config (what `--config.<key>` accepts)."""
    import importlib

    from ml_collections import ConfigDict

    module = importlib.import_module(config_path.removesuffix(".py").replace("/", "."))

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, ConfigDict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    return set(walk(module.get_config()))


FAKE_MAIN = '''
import json, sys
from pathlib import Path

here = Path(__file__).parent
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
workdir = Path(flags["workdir"])
with open(here / "calls.txt", "a") as f:
  f.write(workdir.name + "\\n")
fail = here / "fail.txt"
if fail.exists() and set(fail.read_text().split()) & set(sys.argv[1:]):
  print("fake main: failing on purpose")
  sys.exit(3)
config = {"seed": 0, "distill": {"temperature": 2.0}}
for key, text in flags.items():
  if key.startswith("config."):
    *path, leaf = key[len("config."):].split(".")
    node = config
    for part in path:
      node = node.setdefault(part, {})
    try:
      node[leaf] = json.loads(text)
    except json.JSONDecodeError:
      node[leaf] = text
t, seed = config["distill"]["temperature"], config["seed"]
workdir.mkdir(parents=True, exist_ok=True)
(workdir / "run.json").write_text(json.dumps({"config": config, "machine": "fake"}))
(workdir / "results.json").write_text(json.dumps({
    "mf": {"valid": {"ndcg@10": 0.1 * t}, "test": {"ndcg@10": 0.1 * t + 0.01 * seed},
           "info": {"num_params": 100}},
    "mf_kd": {"test": {"ndcg@10": 0.2 * t + 0.01 * seed}},
}))
(workdir / "COMPLETE").touch()
print("fake main: done", workdir)
'''

GRID = '''
from rec_jax import sweep

BASE_CONFIG = "configs/fake.py"

def get_grid(arg=None):
  tiny = sweep.is_tiny(arg)
  return sweep.product({"distill.temperature": [1.0, 4.0] if tiny else [1.0, 2.0, 4.0]},
                       sweep.seeds(2))
'''


@pytest.fixture
def fake(tmp_path):
    """(grid file, prefix that runs the fake main, function: call count per run)."""
    (tmp_path / "fake_main.py").write_text(FAKE_MAIN)
    (tmp_path / "grid_t.py").write_text(GRID)

    def calls():
        path = tmp_path / "calls.txt"
        return path.read_text().split() if path.exists() else []

    return tmp_path / "grid_t.py", (sys.executable, str(tmp_path / "fake_main.py")), calls


# ----------------------------------------------------------------- grid helpers


def test_product_zip_seeds():
    grid = sweep.product({"distill.topk": [5, 10]}, sweep.seeds(3))
    assert len(grid) == 6
    assert grid[0] == {"distill.topk": 5, "seed": 0}  # First factor varies slowest.
    assert grid[3] == {"distill.topk": 10, "seed": 0}
    assert sweep.product(students=["mf", "sasrec"], seed=[0]) == [
        {"students": "mf", "seed": 0},
        {"students": "sasrec", "seed": 0},
    ]
    zipped = sweep.zip_axes({"model.mf.embed_dim": [8, 16], "model.sasrec.embed_dim": [8, 16]})
    assert zipped == [
        {"model.mf.embed_dim": 8, "model.sasrec.embed_dim": 8},
        {"model.mf.embed_dim": 16, "model.sasrec.embed_dim": 16},
    ]
    assert len(sweep.product(zipped, sweep.seeds(2))) == 4
    with pytest.raises(ValueError):
        sweep.zip_axes({"a": [1, 2], "b": [1]})
    assert sweep.seeds(2, start=5) == [{"seed": 5}, {"seed": 6}]
    assert sweep.is_tiny("tiny") and not sweep.is_tiny(None)
    with pytest.raises(ValueError):
        sweep.is_tiny("tnyi")


def test_run_names_short_unique_stable_safe():
    assert grid_lib.run_names([{"distill.weights.soft": 0.0, "seed": 1}]) == ["soft=0_seed=1"]
    assert grid_lib.run_names([{"seed": 1, "teacher.freeze": "top:1"}]) == ["freeze=top-1_seed=1"]
    assert grid_lib.run_names([{"seed": 0}]) == ["base_seed=0"]
    # Same last key component in one run: the names keep enough of the key.
    assert grid_lib.run_names([{"model.mf.embed_dim": 8, "model.sasrec.embed_dim": 8}]) == [
        "mf.embed_dim=8_sasrec.embed_dim=8"
    ]
    # Collisions across runs fall back to full keys, then to a hash.
    colliding = [
        {"model.mf.embed_dim": 8},
        {"model.sasrec.embed_dim": 8},
        {"teacher.freeze": "top:1"},
        {"teacher.freeze": "top-1"},
    ]
    names = grid_lib.run_names(colliding)
    assert len(set(names)) == 4
    assert names[:2] == ["model.mf.embed_dim=8", "model.sasrec.embed_dim=8"]
    assert all(re.fullmatch(r"[A-Za-z0-9._=+@-]+", n) for n in names)
    long = [{"students": "mf,sasrec,deepfm," * 10, "seed": s} for s in range(2)]
    long_names = grid_lib.run_names(long)
    assert len(set(long_names)) == 2 and all(len(n) <= grid_lib.MAX_NAME_LEN for n in long_names)
    # Stable: the same point gets the same name in another call and another grid.
    grid = sweep.product({"distill.temperature": [1.0, 2.0]}, sweep.seeds(2))
    assert grid_lib.run_names(grid) == grid_lib.run_names(grid)
    assert grid_lib.run_names(grid[:1]) == grid_lib.run_names(grid)[:1] == ["temperature=1_seed=0"]
    with pytest.raises(ValueError):
        grid_lib.run_names([{"seed": 0}, {"seed": 0}])


@pytest.mark.parametrize("path", SHIPPED_GRIDS, ids=lambda p: p.stem)
def test_shipped_grids_expand(path):
    module = grid_lib.load_grid(path)
    assert module.__doc__ and "rec_jax.sweep run" in module.__doc__
    assert "rec_jax.sweep report" in module.__doc__
    config, full = grid_lib.expand(module, "/root", None)
    tiny_config, tiny = grid_lib.expand(module, "/root", "tiny")
    assert config == module.BASE_CONFIG and config.startswith("configs/")
    assert tiny_config == module.BASE_CONFIG + ":tiny"
    assert 0 < len(tiny) < len(full)
    assert len(tiny) <= 6
    for runs in (full, tiny):
        assert len({r.name for r in runs}) == len(runs)
        for run in runs:
            allowed = _config_keys(module.BASE_CONFIG)
            fixed = getattr(module, "FIXED", {})
            assert set(run.overrides) | set(fixed) <= allowed, (
                (set(run.overrides) | set(fixed)) - allowed)
            # Shared settings go into every command but not into the run name.
            for key, value in fixed.items():
                assert f"--config.{key}={grid_lib._flag_value(value)}" in run.args
                assert key not in run.overrides
            assert run.args[1] == f"--workdir=/root/{run.name}"
    assert len({r.overrides["seed"] for r in tiny}) <= 2
    # Result grids replicate over 3 seeds; tuning grids declare SEEDS = 1 (their
    # choice is confirmed over 3 seeds by experiments/main_seeds.py).
    assert len({r.overrides["seed"] for r in full}) == getattr(module, "SEEDS", 3)
    assert len(SHIPPED_GRIDS) >= 6


# -------------------------------------------------------------------- launcher


def test_run_fake_main_failures_skip_and_resume(fake, tmp_path, capsys):
    grid, prefix, calls = fake
    root = tmp_path / "out"
    (tmp_path / "fail.txt").write_text("--config.distill.temperature=4.0\n")
    rc = launch.run_grid(str(grid), str(root), "tiny", prefix=prefix)
    out = capsys.readouterr().out
    assert rc == 1
    names = [
        "temperature=1_seed=0",
        "temperature=1_seed=1",
        "temperature=4_seed=0",
        "temperature=4_seed=1",
    ]
    assert sorted(calls()) == sorted(names)
    for name in names[:2]:
        assert (root / name / "COMPLETE").exists()
        assert "fake main: done" in (root / name / "launcher.log").read_text()
    for name in names[2:]:
        assert not (root / name / "COMPLETE").exists()
        assert "failing on purpose" in (root / name / "launcher.log").read_text()
        assert re.search(rf"FAILED {re.escape(name)}: exit code 3; log .*{name}/launcher.log", out)
    grid_json = json.loads((root / "grid.json").read_text())
    assert grid_json["config"] == "configs/fake.py:tiny"
    assert grid_json["runs"]["temperature=4_seed=1"]["overrides"] == {
        "distill.temperature": 4.0,
        "seed": 1,
    }
    assert "--config.distill.temperature=4.0" in grid_json["runs"][names[3]]["command"]

    # Second launch: finished runs are skipped, the failed ones rerun.
    (tmp_path / "fail.txt").unlink()
    (tmp_path / "calls.txt").unlink()
    assert launch.run_grid(str(grid), str(root), "tiny", prefix=prefix) == 0
    assert sorted(calls()) == sorted(names[2:])

    # An interrupted run (no COMPLETE) is rerun with the same command; nothing else runs.
    (root / names[0] / "COMPLETE").unlink()
    (tmp_path / "calls.txt").unlink()
    assert launch.run_grid(str(grid), str(root), "tiny", prefix=prefix) == 0
    assert calls() == [names[0]]
    assert (root / names[0] / "launcher.log").read_text().count("=== ") == 2
    (tmp_path / "calls.txt").unlink()
    assert launch.run_grid(str(grid), str(root), "tiny", prefix=prefix) == 0
    assert calls() == []

    # The full grid must not reuse the tiny grid's root (same names, other config).
    with pytest.raises(SystemExit):
        launch.run_grid(str(grid), str(root), None, prefix=prefix)


def test_run_only_and_exit_zero_without_complete(fake, tmp_path, capsys):
    grid, prefix, calls = fake
    root = tmp_path / "out"
    assert (
        launch.run_grid(str(grid), str(root), "tiny", only="temperature=4_seed=1", prefix=prefix) == 0
    )
    assert calls() == ["temperature=4_seed=1"]
    # A main that exits 0 without writing COMPLETE did not finish.
    silent = (sys.executable, "-c", "pass")
    assert launch.run_grid(str(grid), str(root), "tiny", only="seed=0", prefix=silent) == 1
    assert "without writing COMPLETE" in capsys.readouterr().out


def test_dry_run_runs_nothing(fake, tmp_path, capsys):
    grid, prefix, calls = fake
    root = tmp_path / "out"
    assert cli.main(["run", str(grid), "--root", str(root), "--dry_run", "--", "--stage=eval"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    assert lines[0].endswith(
        f"rec_jax.main --config=configs/fake.py --workdir={root}/"
        "temperature=1_seed=0 --config.distill.temperature=1.0 "
        "--config.seed=0 --stage=eval"
    )
    assert not root.exists() and calls() == []


@pytest.mark.parametrize("coordinator", [True, False])
def test_emit_tpu_vm(fake, tmp_path, coordinator):
    grid, _, calls = fake
    script = tmp_path / "launch.sh"
    argv = [
        "run",
        str(grid),
        "--root=gs://bucket/t",
        "--arg=tiny",
        "--emit=tpu_vm",
        f"--out={script}",
    ] + ([] if coordinator else ["--no_coordinator"])
    assert cli.main(argv) == 0
    text = script.read_text()
    commands = [l for l in text.splitlines() if l.startswith("gcloud compute tpus tpu-vm ssh")]
    assert len(commands) == 4
    for line in commands:
        assert "--worker=all" in line and "-m rec_jax.main --config=configs/fake.py:tiny" in line
        assert "--workdir=gs://bucket/t/temperature=" in line
        for flag in ("--coordinator_address=", "--num_processes=", "--process_id="):
            assert (flag in line) == coordinator
    assert text.startswith("#!/usr/bin/env bash\n#")
    assert calls() == [] and not Path("gs:").exists()
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(script)], check=True)


# ------------------------------------------------------------------ aggregation


def _write_run(root, name, config, results):
    workdir = root / name
    workdir.mkdir(parents=True)
    (workdir / "run.json").write_text(json.dumps({"config": config, "machine": "test"}))
    (workdir / "results.json").write_text(json.dumps(results))
    (workdir / "COMPLETE").touch()


def _table_row(table, *cells):
    """The Markdown row whose first cells are `cells`."""
    for line in table.splitlines():
        parts = [p.strip() for p in line.strip("|").split("|")]
        if parts[: len(cells)] == list(cells):
            return parts
    raise AssertionError(f"no row {cells} in\n{table}")


def test_report_hand_made_numbers(tmp_path, capsys):
    root = tmp_path / "grid"
    # No grid.json: the swept key (distill.temperature) is found from run.json.
    ndcg = {(1.0, 0): 0.1, (1.0, 1): 0.2, (1.0, 2): 0.3, (4.0, 0): 0.3, (4.0, 1): 0.5}
    for (t, seed), value in ndcg.items():
        results = {
            "mf_kd": {
                "valid": {"ndcg@10": 0.9},
                "test": {"ndcg@10": value, "recall@10": 0.5},
                "info": {"num_params": 1000, "score_ms_per_user": 0.02, "note": "x"},
            },
            "deepfm": {"test": {"auc": 0.7 + seed / 10}},
        }
        if seed == 2:
            del results["mf_kd"]["test"]["recall@10"]  # Partial: one seed lacks a metric.
        _write_run(
            root,
            f"t{t}_s{seed}",
            {"seed": seed, "distill": {"temperature": t}, "model": {"mf": {"embed_dim": 8}}},
            results,
        )
    (root / "broken").mkdir()  # A run with no results yet is ignored.

    table = report.report(root)
    assert table in capsys.readouterr().out
    row = _table_row(table, "1", "mf_kd")
    header = [p.strip() for p in table.splitlines()[0].strip("|").split("|")]
    cell = dict(zip(header, row))
    assert header[:3] == ["temperature", "model", "n"]
    assert cell["n"] == "3"
    assert cell["ndcg@10"] == "0.2000 ± 0.1000"  # mean(0.1, 0.2, 0.3), sample std 0.1.
    assert cell["recall@10"] == "0.5000 ± 0.0000 (n=2)"
    assert cell["auc"] == ""  # mf_kd has no AUC: empty cell.
    assert cell["score_ms_per_user"] == "0.0200 ± 0.0000"
    cell4 = dict(zip(header, _table_row(table, "4", "mf_kd")))
    assert cell4["ndcg@10"] == f"0.4000 ± {math.sqrt(0.02):.4f}"  # (0.3, 0.5): std √0.02.
    deepfm = dict(zip(header, _table_row(table, "1", "deepfm")))
    assert deepfm["auc"] == "0.8000 ± 0.1000" and deepfm["ndcg@10"] == ""
    assert "hr@10" not in header  # Absent everywhere: no column.

    with open(root / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10  # 5 runs x 2 models.
    first = next(r for r in rows if r["run"] == "t1.0_s0" and r["model"] == "mf_kd")
    assert first["distill.temperature"] == "1" and first["seed"] == "0"
    assert float(first["test/ndcg@10"]) == 0.1 and float(first["valid/ndcg@10"]) == 0.9
    assert float(first["num_params"]) == 1000 and "note" not in first
    md = (root / "summary.md").read_text()
    assert table in md and "5 runs with results" in md
    pngs = sorted(p.name for p in (root / "plots").glob("*.png"))
    assert "ndcg@10_vs_temperature.png" in pngs and "auc_vs_temperature.png" in pngs


def test_report_after_launch_uses_grid_json_and_embed_plot(fake, tmp_path):
    grid, prefix, _ = fake
    root = tmp_path / "out"
    (tmp_path / "fail.txt").write_text("--config.seed=1\n")
    assert launch.run_grid(str(grid), str(root), None, prefix=prefix) == 1  # Partial results.
    out = tmp_path / "report"
    assert (
        cli.main(
            [
                "report",
                str(root),
                "--out",
                str(out),
                "--metric",
                "ndcg@10",
                "--metric",
                "valid/ndcg@10",
            ]
        )
        == 0
    )
    md = (out / "summary.md").read_text()
    assert "Runs without results (3)" in md
    assert "| 2 | mf | 1 | 0.2000 | 0.2000 |" in md  # T=2, seed 0: 0.1*T, n=1: no std.
    assert (out / "plots" / "ndcg@10_vs_temperature.png").stat().st_size > 0

    # Embedding-size axes also plot quality vs serving cost.
    sized = tmp_path / "sized"
    for dim in (8, 32):
        for seed in (0, 1):
            _write_run(
                sized,
                f"d{dim}_s{seed}",
                {"seed": seed, "model": {"mf": {"embed_dim": dim}, "sasrec": {"embed_dim": dim}}},
                {
                    "mf": {
                        "test": {"ndcg@10": dim / 100 + seed / 1000},
                        "info": {"score_ms_per_user": dim / 1000},
                    }
                },
            )
    report.report(sized)
    pngs = {p.name for p in (sized / "plots").glob("*.png")}
    assert {"ndcg@10_vs_embed_dim.png", "ndcg@10_vs_score_ms_per_user.png"} <= pngs
    assert "| embed_dim | model | n |" in (sized / "summary.md").read_text()


def test_report_empty_dir(tmp_path):
    assert cli.main(["report", str(tmp_path)]) == 1


def test_report_kd_gains_carry_a_paired_test_over_users_and_seeds(tmp_path):
    """Two seeds; in each, mf_kd beats mf by 0.05 NDCG@10 on every one of 200 users
    (per_user_test.npz as the evaluator writes it): the pooled tests find it."""
    root = tmp_path / "grid"
    rng = np.random.default_rng(0)
    users = np.array([str(u) for u in range(200)])
    for seed in (0, 1):
        base = rng.random(200) * 0.5
        results = {"mf": {"test": {"ndcg@10": float(base.mean())}},
                   "mf_kd": {"test": {"ndcg@10": float(base.mean() + 0.05)}}}
        _write_run(root, f"s{seed}", {"seed": seed}, results)
        for model, values in (("mf", base), ("mf_kd", base + 0.05)):
            (root / f"s{seed}" / model).mkdir()
            np.savez(root / f"s{seed}" / model / "per_user_test.npz", user_id=users,
                     **{"ndcg@10": values})
    report.report(root)
    gains = (root / "summary.md").read_text().split("Relative test ndcg@10 gain")[1]
    row = _table_row(gains, "mf")  # student, n, gain, p (t), p (Wilcoxon)
    assert row[1] == "2" and row[3] == "<1e-4" and row[4] == "<1e-4"
    # Without the per-user files the gain is still reported, the p-values are not.
    for seed in (0, 1):
        (root / f"s{seed}" / "mf" / "per_user_test.npz").unlink()
    report.report(root)
    gains = (root / "summary.md").read_text().split("Relative test ndcg@10 gain")[1]
    row = _table_row(gains, "mf")
    assert row[3] == "—" and row[4] == "—"


def test_report_compares_two_models_per_metric_pooled_over_seeds(tmp_path):
    """--compare A:B: A is better on tail users only (by 0.1 on each of them); the
    pooled test finds the tail gain and no gain on all users is claimed wrongly."""
    root = tmp_path / "grid"
    rng = np.random.default_rng(1)
    users = np.array([str(u) for u in range(300)])
    for seed in (0, 1, 2):
        base = rng.random(300) * 0.5
        tail = np.where(np.arange(300) % 2 == 0, rng.random(300) * 0.2, np.nan)
        per_model = {"mf_kd": (base + rng.normal(0, 0.01, 300), tail + 0.1),
                     "mf_kd@teacher_notext": (base, tail)}
        results = {m: {"test": {"ndcg@10": float(np.mean(a)), "tail/ndcg@10": float(np.nanmean(t))}}
                   for m, (a, t) in per_model.items()}
        _write_run(root, f"s{seed}", {"seed": seed}, results)
        for model, (a, t) in per_model.items():
            (root / f"s{seed}" / model).mkdir()
            np.savez(root / f"s{seed}" / model / "per_user_test.npz", user_id=users,
                     **{"ndcg@10": a, "tail/ndcg@10": t})
    report.report(root, compare=["mf_kd:mf_kd@teacher_notext"])
    text = (root / "summary.md").read_text().split("Comparisons (test")[1]
    tail_row = _table_row(text, "mf_kd", "mf_kd@teacher_notext", "tail/ndcg@10")
    assert tail_row[3] == "3" and tail_row[7] == "<1e-4" and tail_row[8] == "<1e-4"
    assert tail_row[6].startswith("+")
    all_row = _table_row(text, "mf_kd", "mf_kd@teacher_notext", "ndcg@10")
    assert float(all_row[8]) > 0.01  # noise only: no significant difference
    with pytest.raises(ValueError, match="MODEL_A:MODEL_B"):
        report.report(root, compare=["mf_kd"])


def test_report_compares_with_a_teacher_kept_in_the_teacher_cache(tmp_path):
    """Grids keep their teacher in teacher.cache_dir/<fingerprint>/teacher, not in the
    run: --compare teacher:B still pairs its per-user values (found from run.json)."""
    from configs import ml100k_distill

    from rec_jax.recipes import artifacts

    root, cache = tmp_path / "grid", tmp_path / "cache"
    rng = np.random.default_rng(0)
    users = np.array([str(u) for u in range(200)])
    for seed in (0, 1):
        config = ml100k_distill.get_config()
        config.seed, config.teacher.cache_dir = seed, str(cache)
        values = {"teacher": rng.random(200) * 0.5}
        values["mf"] = values["teacher"] - 0.1  # the teacher is better for every user
        results = {m: {"test": {"ndcg@10": float(v.mean())}} for m, v in values.items()}
        _write_run(root, f"s{seed}", json.loads(json.dumps(config.to_dict(), default=str)),
                   results)
        for model, folder in (("teacher", cache / artifacts.fingerprint(config) / "teacher"),
                              ("mf", root / f"s{seed}" / "mf")):
            folder.mkdir(parents=True)
            np.savez(folder / "per_user_test.npz", user_id=users, **{"ndcg@10": values[model]})
    report.report(root, compare=["teacher:mf"])
    text = (root / "summary.md").read_text().split("Comparisons (test")[1]
    row = _table_row(text, "teacher", "mf", "ndcg@10")
    assert row[3] == "2" and row[7] == "<1e-4", row
