"""Metric logging: metrics.jsonl, TensorBoard events, and a progress bar.

The bar and the progress lines go through rec_jax.console, the job's one voice.

Only process 0 writes. On resume from step s, records after s are dropped
from metrics.jsonl and TensorBoard (purge_step), so a resumed run's logs read
as if it had never been interrupted.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax

from rec_jax import console


class MetricLogger:
    """Writes scalars for one model's training run.

    Args:
      folder: the model's output folder.
      start_step: the step training (re)starts from.
      total_steps: for the progress bar.
      name: shown on the progress bar.
      progress: "auto" (a bar on a terminal, a line per log otherwise), "bar" or "off".
    """

    def __init__(self, folder: str, start_step: int, total_steps: int, name: str,
                 progress: str = "auto"):
        self.active = jax.process_index() == 0
        self.path = os.path.join(folder, "metrics.jsonl")
        self.name = name
        self.total_steps = total_steps
        self.start_time = time.time()
        self.start_step = start_step
        self.tb = None
        self.bar = None
        if not self.active:
            return
        os.makedirs(folder, exist_ok=True)
        _truncate_jsonl(self.path, start_step)
        try:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(os.path.join(folder, "tb"), purge_step=start_step or None,
                                    flush_secs=30)
        except ImportError:  # TensorBoard events are optional (e.g. a bare GPU box).
            self.tb = None
        use_bar = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
        if use_bar:
            self.bar = console.ProgressBar(total_steps, start_step, name)

    def step(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def write(self, step: int, scalars: dict[str, float], kind: str = "train") -> None:
        """Records scalars at a step (step = number of updates done)."""
        if not self.active:
            return
        record = {"step": int(step), "kind": kind, "time": round(time.time() - self.start_time, 3)}
        record.update({k: float(v) for k, v in scalars.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)
        if self.bar is not None:
            shown = {k: f"{v:.4g}" for k, v in scalars.items() if k in ("loss", "ndcg@10")}
            self.bar.set_postfix(shown)
        elif kind != "train" or step == self.total_steps:
            self._line(step, scalars, kind)

    def _line(self, step, scalars, kind):
        elapsed = time.time() - self.start_time
        done = step - self.start_step
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
        shown = ", ".join(f"{k}={v:.4f}" for k, v in scalars.items()
                          if k in ("loss", "ndcg@10", "recall@10"))
        console.say(f"[{self.name}] {kind} step {step}/{self.total_steps} ({rate:.1f} step/s, "
                    f"ETA {eta:.0f}s) {shown}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def _truncate_jsonl(path: str, start_step: int) -> None:
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= start_step:
                kept.append(line)
        except (ValueError, KeyError):
            break  # A line torn by a kill ends the usable log.
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)
