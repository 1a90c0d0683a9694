"""The job's one voice: what a run tells its user, on stdout, from process 0 only.

    console.say(f"[{name}] finished earlier; reusing {path}")

Why a printer and not absl logging: the job's lines are its output (the data
summary, split sizes, each model's progress and test metrics, the final
table), read by people and grepped by tests and scripts. absl would put them
on stderr behind a ``I0102 12:00:00.123456 140 run.py:84]`` prefix, and mix
them with what Orbax and TFDS log, which is noise here. So the library says
everything through :func:`say`, and absl logging is left to third-party
libraries, which ``rec_jax.main`` turns down to warnings (``-v 0`` shows all).

A multi-host run prints once, from process 0, not once per host. A progress
bar (tqdm, on a terminal) shares the screen with these lines: a line said
while a bar is open is written above it, and the bar is redrawn below.

This module imports nothing of rec_jax (and not JAX: it asks a JAX that is
already loaded which process it is).
"""

from __future__ import annotations

import os
import sys

_open_bars: list = []


def is_main_process() -> bool:
    """Process 0 of a multi-host run (or any single-process run)."""
    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0


def say(message: str) -> None:
    """Prints one message (possibly several lines) to stdout on process 0, flushed."""
    if not is_main_process():
        return
    if _open_bars:
        from tqdm import tqdm
        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()
    else:
        print(message, flush=True)


class ProgressBar:
    """A step counter on stderr (tqdm) that :func:`say` writes around.

    Args:
      total: steps in all.
      initial: steps already done (a resumed run).
      name: shown before the bar.
    """

    def __init__(self, total: int, initial: int, name: str):
        from tqdm import tqdm
        self._bar = tqdm(total=total, initial=initial, desc=name, unit="step",
                         dynamic_ncols=True, leave=True)
        _open_bars.append(self)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_postfix(self, values: dict) -> None:
        self._bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        if self in _open_bars:
            _open_bars.remove(self)
        self._bar.close()


def quiet_third_party() -> None:
    """Third-party noise off; every entry point calls this before those libraries load
    (each reads these once, at import): transformers' "PyTorch was not found" advice,
    TensorFlow's C++ logs, and its oneDNN notice, which TF 2.21 prints whatever
    TF_CPP_MIN_LOG_LEVEL says (TensorFlow only feeds the input pipeline and runs
    exported bundles here). A value the user set wins."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def start_absl_main(argv) -> None:
    """The start of an absl entry point's main(): no stray arguments, absl logging at
    warnings (Orbax and TFDS log every save and read at INFO; the job says its own
    progress here; -v 0 shows everything), and the repo root on the path so
    `configs.common` imports from config files."""
    from absl import app, flags, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
