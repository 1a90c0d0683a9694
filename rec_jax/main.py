"""Entry point: flags + config -> rec_jax.train.run.run(config, workdir, stage).

    python -m rec_jax.main --config=configs/ml100k_distill.py --workdir=workdir/distill \
        [--config.seed=1 ...] [--stage=all|teacher|student|eval]

Multi-host: pass --coordinator_address/--num_processes/--process_id (or rely
on the cluster's environment, e.g. TPU VMs, with --distributed).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        # Orbax and TFDS log every save and read at INFO; the job prints its own
        # progress. Pass -v 0 (or --verbosity=0) to see everything.
        logging.set_verbosity(logging.WARNING)
    # Repo root on the path so `configs.common` imports from config files.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax
    if _COORDINATOR.value or _DISTRIBUTED.value:
        if _COORDINATOR.value:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from rec_jax.train import run
    logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
                 jax.process_count())
    run.run(_CONFIG.value, _WORKDIR.value, _STAGE.value)


if __name__ == "__main__":
    app.run(main)
