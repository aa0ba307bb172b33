"""The sweep runner: grids, point names and commands, results tables, and a real sweep run twice."""

import csv
import glob
import json
import os
import shlex
import sys
import time

import pytest

from flaxlm import config as config_lib
from flaxlm import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LN_SMOKE = "experiments/ablation_ln.py:smoke"


def test_grids_hand_worked():
  a, b = sweep.axis("model.a", [1, 2]), sweep.axis("train.b", ["x", "y"])
  assert sweep.product(a, b) == [{"model.a": 1, "train.b": "x"}, {"model.a": 1, "train.b": "y"},
                                 {"model.a": 2, "train.b": "x"}, {"model.a": 2, "train.b": "y"}]
  assert sweep.zipped(a, b) == [{"model.a": 1, "train.b": "x"}, {"model.a": 2, "train.b": "y"}]
  assert sweep.product(a, b)[:1] + sweep.axis("model.a", [3]) == [{"model.a": 1, "train.b": "x"}, {"model.a": 3}]
  with pytest.raises(ValueError, match="equally long"):
    sweep.zipped(a, sweep.axis("train.b", [1, 2, 3]))
  with pytest.raises(ValueError, match="set twice"):
    sweep.product(a, sweep.axis("model.a", [5]))
  with pytest.raises(ValueError, match="no values"):
    sweep.axis("model.a", [])


def test_point_names_spell_the_values_and_stay_distinct():
  grid = sweep.product(sweep.axis("model.pre_layer_norm", [False, True]), sweep.axis("optimizer.learning_rate", [1e-3]))
  assert sweep.point_names(grid) == ["pre_layer_norm=False,learning_rate=0.001",
                                     "pre_layer_norm=True,learning_rate=0.001"]
  # The same last part under two sections: the full keys tell them apart.
  clash = sweep.zipped(sweep.axis("model.dtype", ["float32"]), sweep.axis("train.dtype", ["x y/z"]))
  assert sweep.point_names(clash) == ["model.dtype=float32,train.dtype=x_y_z"]
  with pytest.raises(ValueError, match="not distinct"):
    sweep.point_names([{"a.b": "x/y"}, {"a.b": "x y"}])


SWEPT = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
               if "def get_sweep" in open(p, encoding="utf-8").read())


def test_the_ablations_have_grids():
  assert {"ablation_ln.py", "ablation_mask_rate.py", "ablation_whole_word.py", "ablation_mask_replacement.py",
          "ablation_sentence.py", "ablation_tied_embeddings.py"} <= set(SWEPT)


@pytest.mark.parametrize("name", SWEPT)
def test_every_grid_point_of_every_experiment_validates(name, tmp_path):
  for arg in ("", ":smoke"):
    points = sweep.plan(os.path.join(ROOT, "experiments", name) + arg, str(tmp_path), [])
    assert len(points) >= 2
    for point in points:
      config_lib.validate(point.config)
      for key, value in point.values.items():
        section, leaf = key.rsplit(".", 1)
        assert point.config[section][leaf] == value


def test_dry_run_prints_one_flaxlm_command_per_point(tmp_path, capsys):
  assert sweep.main(["--config", LN_SMOKE, "--workdir-root", str(tmp_path), "--dry-run",
                     "--config.train.num_steps=7"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 4
  expected = [("False", "0"), ("False", "4"), ("True", "0"), ("True", "4")]
  for line, (pre_ln, warmup) in zip(lines, expected):
    argv = shlex.split(line)
    assert argv[:3] == [sys.executable, "-m", "flaxlm.main"]
    workdir = str(tmp_path / f"pre_layer_norm={pre_ln},warmup_steps={warmup}")
    assert argv[3:] == ["--config", LN_SMOKE, "--workdir", workdir, "--config.train.num_steps=7",
                        f"--config.model.pre_layer_norm={pre_ln}", f"--config.optimizer.warmup_steps={warmup}"]
  assert not os.listdir(tmp_path)  # A dry run writes nothing.


def test_bad_overrides_fail_before_anything_runs(tmp_path, capsys):
  assert sweep.main(["--config", LN_SMOKE, "--workdir-root", str(tmp_path), "--config.train.no_such_key=1"]) == 2
  assert "config.train.no_such_key" in capsys.readouterr().err
  assert sweep.main(["--config", LN_SMOKE, "--workdir-root", str(tmp_path), "--config.train.num_steps=0"]) == 2
  assert "config.train.num_steps" in capsys.readouterr().err
  assert sweep.main(["--config", LN_SMOKE, "--workdir-root", str(tmp_path), "--parallel=0"]) == 2
  assert sweep.main(["--config", "experiments/no_such.py", "--workdir-root", str(tmp_path)]) == 2
  assert not os.listdir(tmp_path)


def _fake_point(root, name, values, records, checkpoints, num_steps):
  workdir = os.path.join(root, name)
  os.makedirs(os.path.join(workdir, "checkpoints"))
  for step in checkpoints:
    os.makedirs(os.path.join(workdir, "checkpoints", str(step)))
  os.makedirs(os.path.join(workdir, "checkpoints", f"{num_steps}.orbax-checkpoint-tmp-1"))  # A save in flight.
  with open(os.path.join(workdir, "metrics.jsonl"), "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  config = config_lib.base_config()
  config.train.num_steps = num_steps
  return sweep.Point(name, values, workdir, ["true"], config)


def test_results_table_takes_each_points_final_metrics(tmp_path):
  root = str(tmp_path)
  done = _fake_point(root, "lr=0.1", {"optimizer.learning_rate": 0.1}, [
      {"step": 10, "train/loss": 5.0, "train/mlm_accuracy": 0.1, "train/grad_norm": 2.0},
      {"step": 20, "train/loss": 4.0, "train/mlm_accuracy": 0.2, "train/grad_norm": 1.5},
      {"step": 20, "eval/loss": 4.5, "eval/mlm_accuracy": 0.25, "eval/num_tokens": 900.0}], [10, 20], 20)
  partial = _fake_point(root, "lr=0.2", {"optimizer.learning_rate": 0.2}, [
      {"step": 10, "train/loss": "nan", "train/mlm_accuracy": 0.0, "train/grad_norm": "inf"}], [10], 20)
  failed = _fake_point(root, "lr=0.3", {"optimizer.learning_rate": 0.3}, [], [], 20)
  assert sweep.is_finished(done) and not sweep.is_finished(partial)
  written = sweep.write_results(root, [done, partial, failed], {"lr=0.2": 0, "lr=0.3": 1})
  assert [os.path.basename(p) for p in written] == ["results.csv", "results.md", "curves.png"]
  with open(tmp_path / "results.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [r["learning_rate"] for r in rows] == ["0.1", "0.2", "0.3"]
  assert [r["status"] for r in rows] == ["finished", "unfinished", "failed (1)"]
  assert [r["step"] for r in rows] == ["20", "10", "0"]
  assert rows[0]["eval/loss"] == "4.5" and rows[0]["train/loss"] == "4.0" and rows[0]["eval/num_tokens"] == "900.0"
  assert rows[1]["train/loss"] == "nan" and rows[1]["eval/loss"] == ""
  md = (tmp_path / "results.md").read_text(encoding="utf-8").splitlines()
  header = [c.strip() for c in md[0].strip("|").split("|")]
  assert header[:3] == ["learning_rate", "status", "step"] and header[3:5] == ["eval/loss", "eval/mlm_accuracy"]
  assert "eval/num_tokens" not in header and "train/grad_norm" in header  # Counts go to the CSV only.
  assert md[2].startswith("| 0.1 | finished | 20 | 4.5 | 0.25 |")
  assert len(md) == 5
  assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ablation_smoke_sweep_runs_resumes_then_skips(tmp_path, monkeypatch, capsys):
  """The issue's acceptance run: every point of ablation_ln:smoke, one of them resumed from a
  checkpoint left by an interrupted run; a second sweep runs nothing."""
  monkeypatch.setenv("XLA_FLAGS", "")  # One device per subprocess starts faster; the mesh tests cover 8.
  monkeypatch.chdir(ROOT)
  root = tmp_path / "ln"
  points = sweep.plan(LN_SMOKE, str(root), [])
  interrupted = points[3]
  # A run of that point stopped at step 4 of its 12: the sweep must carry it on, not restart it.
  sweep.run_point(sweep.Point(interrupted.name, {}, interrupted.workdir,
                              interrupted.command + ["--config.train.num_steps=4"], interrupted.config), 1, 1)
  assert sweep.checkpoint_steps(interrupted.workdir) == [4]

  start = time.perf_counter()
  assert sweep.main(["--config", LN_SMOKE, "--workdir-root", str(root), "--parallel", "2"]) == 0
  first = time.perf_counter() - start
  out = capsys.readouterr().out
  assert "4 point(s), 0 already finished, 4 to run" in out and "resuming at step 4" in out
  with open(interrupted.workdir + "/sweep.log", encoding="utf-8") as f:
    assert "Resumed from" in f.read()
  with open(root / "results.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [(r["pre_layer_norm"], r["warmup_steps"], r["status"], r["step"]) for r in rows] == [
      ("False", "0", "finished", "12"), ("False", "4", "finished", "12"),
      ("True", "0", "finished", "12"), ("True", "4", "finished", "12")]
  for point, row in zip(points, rows):
    with open(os.path.join(point.workdir, "metrics.jsonl"), encoding="utf-8") as f:
      records = [json.loads(line) for line in f]
    assert float(row["eval/mlm_accuracy"]) == [r for r in records if "eval/mlm_accuracy" in r][-1]["eval/mlm_accuracy"]
    assert [r["step"] for r in records if "train/loss" in r] == [4, 8, 12]  # The resumed one too, no repeats.
  assert (root / "results.md").is_file() and (root / "curves.png").is_file()

  start = time.perf_counter()
  assert sweep.main(["--config", LN_SMOKE, "--workdir-root", str(root)]) == 0
  again = time.perf_counter() - start
  assert "4 already finished, 0 to run" in capsys.readouterr().out
  assert again < 10 and again < first / 5, (again, first)
