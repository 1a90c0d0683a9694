"""Multi-host: 2 processes x 2 devices end where 1 process x 4 devices ends, and resume.

Processes talk over loopback (jax.distributed + gloo CPU collectives), each
with 2 fake CPU devices; the global batch is the same (4 x 512) as in the
single-process run with 4 fake devices. This file runs the default pmap
layout; mesh mode on 2 processes (``config.parallel=mesh``) is in
tests/test_mesh.py, which has the 1-process mesh run to compare against, and
uses the helpers here.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, subprocess_env

# Subprocess jobs: `make test-fast` (-m 'not slow') skips them.
pytestmark = pytest.mark.slow

REPO = str(REPO_ROOT)

ARGS = ["--config=configs/ml100k_mf.py:tiny", "--config.progress=off", "--config.models=mf",
        "--config.model.mf.train.batch_size_per_device=512",
        "--config.model.mf.train.checkpoint_every_steps=10"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir, data_dir, process_id=None, num_processes=None, port=None, devices=4,
            extra=()):
    cmd = [sys.executable, "-m", "rec_jax.main", f"--workdir={workdir}"] + ARGS + [
        f"--config.data.data_dir={data_dir}", *extra]
    if process_id is not None:
        cmd += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
                f"--process_id={process_id}"]
    log = open(os.path.join(os.path.dirname(workdir), f"log_{os.path.basename(workdir)}_"
                            f"{process_id}.txt"), "w")
    return subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(devices), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _two_processes(workdir, data_dir, extra=()):
    port = _free_port()
    return [_launch(workdir, data_dir, p, 2, port, devices=2, extra=extra) for p in range(2)]


class Hung(Exception):
    """A multi-process run made no progress within its time limit (its processes are killed)."""


def _kill(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


# A 2-process tiny run takes about 15 s on the 2-core AMD EPYC, up to ~30 s
# while the other pytest worker (make test runs two) shares the cores; a hang
# is declared at 50 s, so that one costs under a minute of the suite.
HANG_SECONDS = 50


def _wait(procs, timeout=HANG_SECONDS):
    try:
        for p in procs:
            assert p.wait(timeout=timeout) == 0, f"process exited with {p.returncode}"
    except subprocess.TimeoutExpired as e:
        _kill(procs)
        raise Hung(f"no exit within {timeout} s") from e


def _retry_if_hung(fn, workdir, resume=False, attempts=3):
    """fn(), again if it hung, up to `attempts` times in all (a run that fails
    still fails at once): from an empty workdir, or with resume=True from what
    the hung run left there (a resumed run killed again resumes again, from
    its latest checkpoint).

    2-process x 2-device CPU runs over gloo deadlock now and then: in loops of
    the tiny mesh run on the 2-core AMD EPYC, 2 of 10 runs hung (2 of 6 with
    synchronous dispatch), at the first step or at the first step after an
    evaluation. In a hung pair (gdb) both processes sit in Execute; one
    process has both local devices' programs inside the gloo all-reduce, the
    other has one device's program there and the other device's launch
    waiting on XLA's per-device in-flight semaphore. Not fixed here (XLA's CPU
    client); openxla/xla#16430 reports CPU collectives failing with
    --xla_force_host_platform_device_count=2 as well. Three hangs in a row fail.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Hung as e:
            if attempt == attempts:
                raise
            print(f"\nWARNING: {workdir}: hung ({e}); attempt {attempt + 1} of {attempts}",
                  flush=True)
            if not resume:
                shutil.rmtree(workdir, ignore_errors=True)


def _results(workdir):
    with open(os.path.join(workdir, "mf", "results.json")) as f:
        return json.load(f)


def _metrics(workdir):
    r = _results(workdir)
    return {f"{part}/{k}": v for part in ("valid", "test") for k, v in r[part].items()}


def _ckpt_steps(workdir):
    folder = os.path.join(workdir, "mf", "ckpt")
    if not os.path.isdir(folder):
        return []
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def _kill_at_first_checkpoint(procs, workdir, poll=0.2, timeout=HANG_SECONDS):
    """SIGKILLs every process once a checkpoint exists; returns the checkpointed steps."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _ckpt_steps(workdir) or any(p.poll() is not None for p in procs):
            break
        time.sleep(poll)
    else:
        _kill(procs)
        raise Hung(f"no checkpoint within {timeout} s")
    _kill(procs)
    return _ckpt_steps(workdir)  # (one more may have landed before the kill)


def test_two_processes_match_one_and_resume(tmp_path, data_dir):
    """One 2-process run, SIGKILLed once a checkpoint exists and resumed with
    the same command, ends where the 1-process run ends: the steps before the
    kill and after the resume both run on 2 processes, so this checks the
    multi-host step and the resume at once (tests/test_mesh.py also compares
    a resumed 2-process run with an uninterrupted one, bitwise)."""
    single = str(tmp_path / "single")
    _wait([_launch(single, data_dir)], timeout=300)  # (one process: no gloo)
    reference = _metrics(single)
    assert reference["test/ndcg@10"] > 0.0

    # Kill both processes once a checkpoint exists, then resume with the same command.
    resumed = str(tmp_path / "resumed")
    steps = _retry_if_hung(
        lambda: _kill_at_first_checkpoint(_two_processes(resumed, data_dir), resumed), resumed)
    assert steps, "no checkpoint appeared before the run ended"
    assert not os.path.exists(os.path.join(resumed, "mf", "results.json"))
    _retry_if_hung(lambda: _wait(_two_processes(resumed, data_dir)), resumed, resume=True)
    with open(tmp_path / "log_resumed_0.txt") as f:  # (the log of the last attempt)
        assert "resumed from step" in f.read()
    after = _metrics(resumed)
    assert after.keys() == reference.keys()
    assert _results(resumed)["info"]["steps_done"] == _results(single)["info"]["steps_done"]
    for k, v in reference.items():
        assert abs(after[k] - v) <= 1e-5, (k, after[k], v)
