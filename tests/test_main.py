"""The command line end to end: run, resume, predict (preemption is in test_fault_tolerance.py)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--config", "experiments/demo.py:smoke", "--config.optimizer.schedule_steps=30"]


def _env():
  # One device keeps subprocess start-up quick; the mesh tests cover 8.
  return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def _main(workdir, *args):
  return subprocess.run([sys.executable, "-m", "flaxlm.main", *SMOKE, "--workdir", str(workdir), *args],
                        cwd=ROOT, capture_output=True, text=True, env=_env(), timeout=600)


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _train_losses(workdir):
  return {r["step"]: r["train/loss"] for r in _records(workdir) if "train/loss" in r}


def test_second_run_resumes_and_metrics_continue(tmp_path):
  first = _main(tmp_path / "w", "--config.train.num_steps=20")
  assert first.returncode == 0, first.stderr[-3000:]
  assert "Fill in the blank" in first.stdout + first.stderr
  second = _main(tmp_path / "w")
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Resumed from" in second.stdout + second.stderr and "(step 20 of 30)" in second.stdout + second.stderr
  steps = [r["step"] for r in _records(tmp_path / "w") if "train/loss" in r]
  assert steps == [5, 10, 15, 20, 25, 30]
  straight = _main(tmp_path / "straight")
  assert straight.returncode == 0, straight.stderr[-3000:]
  assert _train_losses(tmp_path / "w") == _train_losses(tmp_path / "straight")
  # Resuming a finished run trains nothing and says so.
  third = _main(tmp_path / "w")
  assert third.returncode == 0 and "already holds a finished run" in third.stdout + third.stderr
  assert len(_records(tmp_path / "w")) == len(_records(tmp_path / "straight")) + 1  # + the eval at 20.

  predicted = subprocess.run([sys.executable, "-m", "flaxlm.predict", "--workdir", str(tmp_path / "w"),
                              "--text", "Return the [MASK] of the function."], cwd=ROOT, capture_output=True,
                             text=True, env=_env(), timeout=300)
  assert predicted.returncode == 0, predicted.stderr[-3000:]
  lines = predicted.stdout.strip().splitlines()
  assert lines[0] == "Return the [MASK] of the function." and lines[1].startswith("  [MASK] #1: ")
  probs = [float(x) for x in lines[1].split()[3::2]]
  assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
