"""Where metrics go: `metrics.jsonl` and TensorBoard in the workdir (process 0 only)."""

from __future__ import annotations

import json
import math
import os


class MetricsWriter:
  """Appends `{"step": N, "train/loss": ...}` lines to metrics.jsonl and scalars to TensorBoard.

  On resume from step S, lines past S (written after the last checkpoint by the run that stopped)
  are dropped first, so the file reads as one uninterrupted run.
  """

  def __init__(self, workdir: str, resume_step: int, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not enabled:
      return
    _truncate_after(self.path, resume_step)
    from tensorboardX import SummaryWriter  # Pure Python event files; no TensorFlow needed.
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    """Records one step's metrics."""
    if not self.enabled:
      return
    clean = {k: _jsonable(v) for k, v in metrics.items()}
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": int(step), **clean}) + "\n")
    for key, value in clean.items():
      if isinstance(value, float) and math.isfinite(value):
        self._tb.add_scalar(key, value, int(step))

  def close(self) -> None:
    """Flushes TensorBoard."""
    if self._tb is not None:
      self._tb.close()


def _jsonable(value):
  value = float(value)
  return value if math.isfinite(value) else str(value)  # JSON has no NaN; keep it visible as a string.


def _truncate_after(path: str, step: int) -> None:
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        kept.append(line)
    except (ValueError, KeyError):
      continue  # A line cut short by a crash.
  if len(kept) != len(lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(tmp, path)


def read_metrics(workdir: str) -> list[dict]:
  """All records of a workdir's metrics.jsonl, in order."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
