"""Mistakes a user can make end the run with one line on stderr, no traceback.

Each case runs the real entry point in a subprocess and must die before any
training: a bad config value, an unknown or renamed key, a missing teacher,
a malformed ratings file.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO_ROOT, TINY_RATINGS, subprocess_env, write_tiny_movielens
from rec_jax import errors
from rec_jax.train import trainer


def run_main(tmp_path, *flags, config="configs/ml100k_mf.py:tiny"):
    cmd = [sys.executable, "-m", "rec_jax.main", f"--config={config}",
           f"--workdir={tmp_path / 'run'}", "--config.progress=off",
           f"--config.data.data_dir={REPO_ROOT / 'data'}", *flags]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=subprocess_env(1), capture_output=True,
                          text=True, timeout=120)


def error_line(out) -> str:
    """The one line a user error leaves: status 2, no traceback, `error: ...` last."""
    assert out.returncode == 2, (out.returncode, out.stdout[-2000:], out.stderr[-3000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), out.stderr[-3000:]
    return last


def test_bad_config_value_names_the_key(tmp_path):
    line = error_line(run_main(tmp_path, "--config.data.split=bogus"))
    assert "config.data.split='bogus'" in line and "'loo_time'" in line


def test_unknown_key_names_the_key(tmp_path):
    line = error_line(run_main(tmp_path, "--config.model.mf.no_such_key=1"))
    assert "config.model.mf" in line and "'no_such_key'" in line
    assert not (tmp_path / "run").exists()  # refused before anything ran


def test_renamed_key_says_its_new_name(tmp_path):
    line = error_line(run_main(tmp_path, "--config.enhance.mode=add"))
    assert "config.enhance was renamed to config.fusion" in line


def test_student_stage_without_teacher_names_the_missing_file(tmp_path):
    line = error_line(run_main(tmp_path, "--stage=student",
                               config="configs/ml100k_distill.py:tiny"))
    assert str(tmp_path / "run" / "teacher" / "artifacts.npz") in line
    assert "--stage=teacher" in line


def test_malformed_ratings_file_names_file_line_and_field(tmp_path):
    ratings = list(TINY_RATINGS)
    ratings[2] = ("7", "30", "x", 881250951)  # line 3 of u.data
    source = write_tiny_movielens(tmp_path / "ml-100k", "grouplens_100k", ratings=ratings)
    out = run_main(tmp_path, f"--config.data.source_dir={source}",
                   f"--config.data.data_dir={tmp_path / 'prepared'}")
    line = error_line(out)
    assert "u.data, line 3, field 'rating'" in line and "'x'" in line


def test_user_errors_keep_their_builtin_types():
    """Callers that caught the built-in exceptions before still catch these."""
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.DataError, ValueError)
    assert issubclass(errors.MissingInputError, FileNotFoundError)
    assert issubclass(trainer.NonFiniteLoss, errors.UserError)
    assert issubclass(trainer.NonFiniteLoss, FloatingPointError)
    assert not issubclass(trainer.TrainingInterrupted, errors.UserError)  # a kill still resumes


@pytest.mark.parametrize("flag", ["--config.seed=abc", "--stage=bogus"])
def test_bad_flag_value_is_one_line(tmp_path, flag):
    line = error_line(run_main(tmp_path, flag))
    assert flag.split("=")[0].lstrip("-") in line
