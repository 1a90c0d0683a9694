r"""Export a trained student as a serving bundle (see rec_jax.deploy.export).

    python -m rec_jax.export --workdir=workdir/ml100k_distill --model=mf_kd \
        --out=bundles/mf_kd [--max_new_items=1000] [--hold_out=none|cold]

Reads the finished job in --workdir (its run.json, split and checkpoints; it
never trains) and writes --out. Serve it with ``python -m rec_jax.serve``.
"""

import os
import time

from rec_jax import console, errors

console.quiet_third_party()

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished job's workdir (rec_jax.main).")
_MODEL = flags.DEFINE_string("model", None, "The student to export, e.g. mf_kd_fusion.")
_OUT = flags.DEFINE_string("out", None, "The bundle folder to write (replaced).")
_MAX_NEW = flags.DEFINE_integer("max_new_items", 1000, "Rows reserved for items added later.")
_HOLD_OUT = flags.DEFINE_enum("hold_out", "none", ["none", "cold"],
                              "cold: the cold_items split's cold items start inactive "
                              "(to add them back through the service).")
flags.mark_flags_as_required(["workdir", "model", "out"])


def main(argv):
    console.start_absl_main(argv)
    from rec_jax.deploy import export, trained

    t = time.time()
    try:
        student = trained.load(_WORKDIR.value, _MODEL.value)
        meta = export.export(student, _OUT.value, _MAX_NEW.value, _HOLD_OUT.value,
                             {"workdir": os.path.abspath(_WORKDIR.value)})
    except errors.UserError as e:
        errors.fail(e)
    console.say(f"exported {meta['model']} ({meta['num_items']} items, capacity "
                f"{meta['capacity']}, new-item text path: {'yes' if meta['text'] else 'no'}) "
                f"to {_OUT.value} in {time.time() - t:.1f} s")


if __name__ == "__main__":
    app.run(main)
