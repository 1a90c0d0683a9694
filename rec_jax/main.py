r"""Entry point: flags + config -> rec_jax.run.run(config, workdir, stage).

    python -m rec_jax.main --config=configs/ml100k_distill.py --workdir=workdir/distill \
        [--config.seed=1 ...] [--stage=all|teacher|student|eval]

Multi-host: pass --coordinator_address/--num_processes/--process_id (or rely
on the cluster's environment, e.g. TPU VMs, with --distributed).

A mistake the user can fix (a bad config key or value, a malformed data file,
a missing teacher; rec_jax.errors.UserError) ends the run with one line on
stderr, ``error: <message>``, and exit status 2; a bug keeps its traceback.
"""

import re

from rec_jax import console, errors  # (these import no third-party library)

console.quiet_third_party()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_STAGE = flags.DEFINE_enum("stage", "all", ["all", "teacher", "student", "eval"],
                           "Which stage(s) of the job to run.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() with auto-detection.")
flags.mark_flags_as_required(["config", "workdir"])

# Config sections that were renamed: the old name is refused by name.
RENAMED = {"enhance": "fusion"}
_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)")  # --config.a.b=1 -> "a.b"


_fail = errors.fail


def _parse_flags(argv):
    """absl's flag parsing, with every mistake in the flags or the config ended in one line."""
    overrides = [(m.group(1), arg) for arg in argv[1:] if (m := _OVERRIDE.match(arg))]
    for key, arg in overrides:
        old = key.split(".")[0]
        if old in RENAMED:
            _fail(f"{arg}: config.{old} was renamed to config.{RENAMED[old]}")
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:  # A bad value, a missing flag, a config file that raised.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        _fail(lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}")
    except (KeyError, AttributeError) as e:
        # ml_collections' way of saying an override names no key: a KeyError
        # (maybe inside the AttributeError) of "'nope'", maybe followed by a line
        # 'Did you mean "seed" instead of "nope"?'.
        detail = e
        while isinstance(detail, BaseException) and detail.args:
            detail = detail.args[0]
        missing, *hint = str(detail).split("\n")
        missing = missing.strip("'\"")
        for key, arg in overrides:
            parts = key.split(".")
            if missing in parts:
                parent = ".".join(["config"] + parts[:parts.index(missing)])
                _fail(f"{arg}: {parent} has no key {missing!r}"
                      + "".join(f" ({line.strip()})" for line in hint if line.strip()))
        raise
    try:
        getattr(_CONFIG.value, "lock")  # A config file that failed to load raises when read.
    except OSError as e:
        _fail(f"--config: {str(e).strip().splitlines()[-1].strip()}")
    return rest


def main(argv):
    console.start_absl_main(argv)
    import jax
    if _COORDINATOR.value or _DISTRIBUTED.value:
        if _COORDINATOR.value:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            # (2-process x 2-device runs deadlock now and then inside XLA's CPU
            # client, with or without async dispatch: tests/test_multihost.py.)
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from rec_jax import run
    console.say(f"machine: {run.machine_description()}")
    try:
        config = _CONFIG.value
        if config.job == "refresh":
            from rec_jax import refresh
            refresh.run(config, _WORKDIR.value)
        elif config.job == "train":
            run.run(config, _WORKDIR.value, _STAGE.value)
        else:
            raise errors.ConfigError(f"config.job={config.job!r}: use 'train' or 'refresh'")
    except errors.UserError as e:
        _fail(e)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
