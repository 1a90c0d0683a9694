"""Scale and speed benchmark: training, evaluation, encoder, serving, memory.

    python -m rec_jax.bench [--sizes ml100k,100k,1m,10m] [--out FILE.json] [--quick]

prints a Markdown table and writes the JSON (default ``workdir/bench/results.json``)
and, next to it, ``<out>_epoch.png``: time per epoch versus data size with a
linear reference. Every figure is a median over repeats after compilation;
the machine (cores, device kind, load average) is recorded, because on a
shared machine the load moves wall times by tens of percent.

Parts (``--parts``, default all), one module each:

* ``train`` (:mod:`.train`): student examples/s (MF, SASRec, DeepFM) through
  the real step (``recipes.model_spec`` + ``make_pmapped_step``) and the real
  ``TrainPipeline``, summing metrics on device as ``trainer.fit`` does. Data
  (:mod:`.data`): real ml-100k (``ml100k``) and synthetic MovieLens
  (``100k``, ``1m``, ``10m``: :mod:`.synthetic` in the ml-1m layout, prepared
  through the TFDS builder once and cached under ``--data_dir``; preparation
  time is reported). An epoch is timed whole when it has at most
  ``--max_steps`` steps, else that many steps are timed and the epoch time
  extrapolated (marked ``*``). For MF on ml-100k a profile splits the step
  time into batch building, host->device transfer, the step itself and the
  metric sums, and compares the tf / numpy engines, several steps per call
  (:mod:`.multistep`) and ``trainer.fit`` end to end.
* ``eval`` (:mod:`.eval`): full-ranking ``Evaluator`` (all test users x all
  items) on ml-100k.
* ``encoder`` (:mod:`.encoder`): teacher BERT items/s forward and
  forward+backward, fp32 and bf16, with FLOPs from XLA's cost analysis.
* ``teacher_step`` (:mod:`.teacher`): the teacher's train step
  (``--teacher_freeze``, ``--dtype``): step time, XLA FLOPs per step,
  achieved FLOP/s and its fraction of the device's peak (GPUs with a known
  peak).
* ``serving`` (:mod:`.serving`): latency of ranking the whole catalogue
  (scores + top 20) for 1 and 1,024 users, MF vs the teacher; the teacher's
  per-user cost includes encoding the profile text with BERT (as
  ``run.bert_user_text_ms``).
* ``mesh`` (:mod:`.mesh_memory`): per-device memory of a 10M-item x 64 MF
  with Adam at 1/2/4/8 devices (in a child process with 8 fake CPU devices
  unless the machine has 8).

Without TensorFlow (``--no_tf``, or TF absent) only prepared ``arrays.npz``
files are read and the numpy input engine is used. The report
(:mod:`.report`) reads the results dict alone: ``report.markdown(json.load(f))``
renders a saved run.
"""

import os

# The checkout: `configs` imports from it, and default paths sit in it.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
