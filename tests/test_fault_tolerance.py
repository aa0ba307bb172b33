"""Fault injection, for real: signals to trainer subprocesses, files damaged on disk, non-finite
losses, changed configs, bad inputs, a full disk, and host memory over many checkpoint saves."""

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from flaxlm import config as config_lib
from flaxlm.train import loop
from flaxlm.train.checkpoint import CheckpointError
from flaxlm.train.metrics import read_metrics

from conftest import SHARED_DATA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--config", "experiments/demo.py:smoke", "--config.optimizer.schedule_steps=30",
         "--config.train.progress_bar=false"]


def _env():
  return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def _cli(*args, module="flaxlm.main"):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                        env=_env(), timeout=600)


def _state(workdir, step):
  """The whole train state (params, optimizer state, step, rng, counters) of a checkpoint, as NumPy."""
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return jax.tree.map(np.asarray, restored["state"])


def _assert_same_state(a, b):
  la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
  assert [p for p, _ in la] == [p for p, _ in lb]
  for (path, x), (_, y) in zip(la, lb):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def _files(directory):
  """{relative path: sha256} of every file below `directory`."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """The uninterrupted smoke run to step 24, the reference for exact resumption."""
  workdir = tmp_path_factory.mktemp("straight")
  result = _cli(*SMOKE, "--workdir", str(workdir), "--config.train.num_steps=24",
                "--config.train.checkpoint_every=1000")
  assert result.returncode == 0, result.stderr[-3000:]
  return str(workdir)


def _start(workdir, *extra):
  return subprocess.Popen([sys.executable, "-m", "flaxlm.main", *SMOKE, "--workdir", str(workdir), *extra],
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_metrics(workdir, lines, proc, deadline=300):
  path = os.path.join(workdir, "metrics.jsonl")
  end = time.time() + deadline
  while time.time() < end and proc.poll() is None:
    if os.path.exists(path) and open(path, encoding="utf-8").read().count("\n") >= lines:
      return
    time.sleep(0.05)


def test_sigterm_saves_the_current_step_and_the_resumed_run_is_bit_identical(straight_run, tmp_path):
  workdir = str(tmp_path / "w")
  proc = _start(workdir, "--config.train.num_steps=24", "--config.train.checkpoint_every=1000")
  _wait_for_metrics(workdir, 2, proc)  # Logged step 10: training is under way.
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]
  steps = sorted(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints")) if p.isdigit())
  assert len(steps) == 1 and 10 <= steps[0] < 24
  assert f"saved a checkpoint at step {steps[0]}" in err
  again = _cli(*SMOKE, "--workdir", workdir, "--config.train.num_steps=24", "--config.train.checkpoint_every=1000")
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"(step {steps[0]} of 24)" in again.stdout + again.stderr
  _assert_same_state(_state(workdir, 24), _state(straight_run, 24))


def test_sigkill_during_an_async_write_resumes_from_the_last_commit(straight_run, tmp_path):
  workdir = str(tmp_path / "w")
  checkpoints = os.path.join(workdir, "checkpoints")
  for _ in range(5):  # Catching a write in flight is a race; a few tries make it certain in practice.
    proc = _start(workdir, "--config.train.num_steps=24", "--config.train.checkpoint_every=2")
    caught = None
    while proc.poll() is None:
      names = os.listdir(checkpoints) if os.path.isdir(checkpoints) else []
      committed = [int(n) for n in names if n.isdigit()]
      in_flight = [n for n in names if "tmp" in n]
      if in_flight and committed:
        proc.kill()
        caught = (sorted(committed), in_flight)
        break
    proc.communicate(timeout=300)
    if caught:
      break
    shutil.rmtree(workdir)
  assert caught, "never saw a checkpoint write in flight"
  again = _cli(*SMOKE, "--workdir", workdir, "--config.train.num_steps=24", "--config.train.checkpoint_every=2")
  assert again.returncode == 0, again.stderr[-3000:]
  resumed = int((again.stdout + again.stderr).split("(step ")[1].split(" of")[0])
  assert resumed >= caught[0][-1]  # At least the newest commit seen before the kill.
  assert not [n for n in os.listdir(checkpoints) if "tmp" in n]  # The torn write was cleaned up.
  _assert_same_state(_state(workdir, 24), _state(straight_run, 24))


def _tiny(tiny_config, **train):
  c = copy.deepcopy(tiny_config)
  c.train.update(**train)
  return c


def _damage(workdir, step, how):
  state_dir = os.path.join(workdir, "checkpoints", str(step), "state")
  files = [os.path.join(r, n) for r, _, ns in os.walk(state_dir) for n in ns]
  if how == "truncate":
    # The merged data files (state/d/) hold the arrays; cut the largest in half.
    biggest = max((f for f in files if f[len(state_dir):].startswith(os.sep + "d" + os.sep)), key=os.path.getsize)
    with open(biggest, "r+b") as f:
      f.truncate(os.path.getsize(biggest) // 2)
  else:
    os.remove(os.path.join(workdir, "checkpoints", str(step), "data", "process_0-of-1.json"))


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_damaged_newest_checkpoint_falls_back_and_never_deletes_a_good_one(tiny_config, tmp_path, how, capsys):
  workdir = str(tmp_path / "w")
  loop.run(_tiny(tiny_config, num_steps=8, checkpoint_every=4), workdir)
  good = _files(os.path.join(workdir, "checkpoints", "4"))
  _damage(workdir, 8, how)
  with pytest.raises(CheckpointError, match=r"checkpoint at step 8 .* is damaged"):
    loop.run(_tiny(tiny_config, num_steps=12, checkpoint_every=4, on_damaged_checkpoint="fail"), workdir)
  assert _files(os.path.join(workdir, "checkpoints", "4")) == good
  capsys.readouterr()
  loop.run(_tiny(tiny_config, num_steps=12, checkpoint_every=4), workdir)
  out = capsys.readouterr()
  assert "step 8" in out.out + out.err and "damaged" in out.out + out.err
  assert "Resumed from" in out.out + out.err and "/4 (step 4 of 12)" in out.out + out.err
  assert os.path.isdir(os.path.join(workdir, "damaged_checkpoints", "8"))
  assert {4, 8, 12} <= {int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()}


def test_all_checkpoints_damaged_never_starts_from_scratch(tiny_config, tmp_path):
  workdir = str(tmp_path / "w")
  loop.run(_tiny(tiny_config, num_steps=4, checkpoint_every=4), workdir)
  _damage(workdir, 4, "truncate")
  for _ in range(2):  # And not on the run after either.
    with pytest.raises(CheckpointError, match="Refusing to start from scratch"):
      loop.run(_tiny(tiny_config, num_steps=8), workdir)
  assert os.path.isdir(os.path.join(workdir, "damaged_checkpoints", "4"))


def _stsb(tmp_path, bad_label):
  rng = np.random.default_rng(0)
  words = ["cat", "dog", "sleeps", "runs", "the", "a", "not", "big", "small", "house"]
  rows = ["genre\tsentence1\tsentence2\tscore"]
  for i in range(40):
    label = bad_label if i == 7 else f"{i % 5}.0"
    rows.append(f"x\t{' '.join(rng.choice(words, 4))}\t{' '.join(rng.choice(words, 5))}\t{label}")
  path = tmp_path / "stsb.tsv"
  path.write_text("\n".join(rows) + "\n", encoding="utf-8")
  return str(path)


def _stsb_config(path):
  from flaxlm import recipes
  c = recipes.finetuning("classification", {"smoke": "true"}, set(), "test")
  c.task.glue_task = "stsb"
  c.data.train_file = c.data.eval_file = path
  c.train.update(num_steps=12, checkpoint_every=4, progress_bar=False, log_every=4)
  return c


def test_nonfinite_update_is_not_applied_and_counted(tmp_path):
  # A label of 1e30 squares to infinity in float32: a real overflow from a bad data row.
  config = _stsb_config(_stsb(tmp_path, "1e30"))
  run = loop.Run(config, str(tmp_path / "unit"))
  state = run.init_state()
  task = run.task
  bad = [e for e in task.encoded_examples("train") if e["labels"][0] > 1e29]
  batch = task._padded_batch(bad, config.train.batch_size, task.seq_len)
  before = jax.tree.map(np.asarray, state)
  after, metrics = run.train_step(state, run.put_batch(batch))
  assert float(metrics["skipped_updates"][0]) == 1.0 and int(after.skipped_updates) == 1
  _assert_same_state(before.params, jax.tree.map(np.asarray, after.params))
  _assert_same_state(before.opt_state, jax.tree.map(np.asarray, after.opt_state))


def test_nonfinite_halts_by_default_and_skips_on_request(tmp_path):
  path = _stsb(tmp_path, "1e30")
  workdir = str(tmp_path / "halt")
  with pytest.raises(loop.NonFiniteError, match=r"step (\d+): the loss or gradients were not finite"):
    loop.run(_stsb_config(path), workdir)
  dumped = [n for n in os.listdir(workdir) if n.startswith("nonfinite_batch_step")]
  assert len(dumped) == 1
  assert (np.load(os.path.join(workdir, dumped[0]))["labels"] > 1e29).any()  # The culprit row is in it.
  for step in (int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()):
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(_state(workdir, step)["params"]))
  skip = _stsb_config(path)
  skip.train.nonfinite = "skip"
  loop.run(skip, str(tmp_path / "skip"))
  records = [r for r in read_metrics(str(tmp_path / "skip")) if "train/skipped_updates_total" in r]
  assert records[-1]["step"] == 12 and records[-1]["train/skipped_updates_total"] >= 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(_state(str(tmp_path / "skip"), 12)["params"]))


@pytest.mark.parametrize("section,key,value", [
    ("model", "hidden_size", 48), ("train", "batch_size", 32), ("mlm", "mask_rate", 0.4), (None, "seed", 7),
])
def test_resume_with_a_changed_identity_key_is_refused(tiny_config, tmp_path, section, key, value):
  workdir = str(tmp_path / "w")
  loop.run(_tiny(tiny_config, num_steps=4, checkpoint_every=4), workdir)
  before = _files(workdir)
  changed = _tiny(tiny_config, num_steps=8)
  if section:
    changed[section][key] = value
  else:
    changed[key] = value
  name = f"{section}.{key}" if section else key
  with pytest.raises(config_lib.ConfigError, match=rf"refusing to resume with: {name}:"):
    loop.run(changed, workdir)
  assert _files(workdir) == before  # Nothing written, nothing deleted.
  if key == "mask_rate":
    changed.train.allow_changed_keys = ("mlm.mask_rate",)
    loop.run(changed, workdir)
    assert {r["step"] for r in read_metrics(workdir)} >= {6, 8}


def _stream_hashes(iterator, n):
  return [hashlib.sha256(b"".join(np.ascontiguousarray(v).tobytes() for _, v in sorted(next(iterator).items())))
          .hexdigest() for _ in range(n)]


@pytest.mark.parametrize("task", ["mlm", "classification"])
def test_data_stream_after_resume_equals_the_uninterrupted_stream(tiny_config, tiny_tokenizer, tmp_path, task):
  """Resuming from the saved state at every step (mid-epoch and at the epoch boundaries) repeats the stream."""
  from flaxlm.tasks import get_task
  if task == "mlm":
    config = copy.deepcopy(tiny_config)
    config.data.packing_bins = 2
    batches = lambda: get_task(config, tiny_tokenizer).train_batches(4, 0, 1)
  else:
    config = _stsb_config(_stsb(tmp_path, "1.0"))  # 40 examples: an epoch every few batches.
    task_object = get_task(config, tiny_tokenizer)
    batches = lambda: task_object.train_batches(2, 0, 1)
  reference = batches()
  states, hashes = [], []
  for _ in range(30):
    states.append(reference.get_state())
    hashes.extend(_stream_hashes(reference, 1))
  for k in range(0, 30, 3):
    resumed = batches()
    resumed.set_state(states[k])
    assert _stream_hashes(resumed, 30 - k) == hashes[k:], f"resumed at batch {k}"


def test_eval_counts_every_example_when_the_batch_does_not_divide_it(tmp_path):
  if not os.path.isdir(SHARED_DATA):
    pytest.skip(f"shared data not found at {SHARED_DATA}")
  from flaxlm import recipes
  c = recipes.finetuning("classification", {"smoke": "true"}, set(), "test")
  c.data.train_file, c.data.eval_file = f"{SHARED_DATA}/sst2/dev.tsv", f"{SHARED_DATA}/sst2/dev.tsv"
  c.data.pack_examples = False
  c.train.eval_batch_size = 48  # 872 = 18 x 48 + 8: the last batch holds 8 real rows.
  run = loop.Run(c, str(tmp_path))
  assert run.evaluate(run.init_state().params)["num_examples"] == 872


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  """A workdir with committed checkpoints, for the bad-input cases to leave alone."""
  root = tmp_path_factory.mktemp("bad_inputs")
  tsv = root / "train.tsv"
  tsv.write_text("sentence\tlabel\n" + "".join(f"the function {i} returns\t{i % 2}\n" for i in range(40)),
                 encoding="utf-8")
  workdir = root / "w"
  result = _cli("--config", f"experiments/sst2_finetune.py:smoke,data_dir={root}", "--workdir", str(workdir),
                f"--config.data.train_file={tsv}", f"--config.data.eval_file={tsv}", "--config.train.num_steps=4",
                "--config.train.checkpoint_every=2", "--config.train.progress_bar=false")
  assert result.returncode == 0, result.stderr[-3000:]
  return root, str(workdir)


def _bad_input_case(root, name):
  """(extra arguments, text the error must contain) for one bad input."""
  tsv = root / "train.tsv"
  if name == "missing data file":
    return [f"--config.data.eval_file={root}/no_such_dev.tsv"], "no_such_dev.tsv"
  if name == "malformed TSV line":
    bad = root / "malformed.tsv"
    bad.write_text("sentence\tlabel\ngood one\t1\nno tab here\n", encoding="utf-8")
    return [f"--config.data.eval_file={bad}"], "malformed.tsv:3"
  if name == "label outside the label set":
    bad = root / "label.tsv"
    bad.write_text("sentence\tlabel\ngood one\t5\n", encoding="utf-8")
    return [f"--config.data.eval_file={bad}"], "label.tsv:2: label '5'"
  if name == "unknown config key":
    return ["--config.train.num_stepz=3"], "num_stepz"
  if name == "non-numeric value":
    return ["--config.train.num_steps=many"], "num_steps"
  if name == "max_seq_len above positions":
    return ["--config.data.max_seq_len=512"], "config.data.max_seq_len: 512 exceeds model.max_position_embeddings"
  raise AssertionError(name)


@pytest.mark.parametrize("name", ["missing data file", "malformed TSV line", "label outside the label set",
                                  "unknown config key", "non-numeric value", "max_seq_len above positions"])
def test_bad_inputs_fail_naming_the_input_and_leave_checkpoints_alone(trained_workdir, name):
  root, workdir = trained_workdir
  before = _files(os.path.join(workdir, "checkpoints"))
  extra, expected = _bad_input_case(root, name)
  tsv = root / "train.tsv"
  result = _cli("--config", f"experiments/sst2_finetune.py:smoke,data_dir={root}", "--workdir", workdir,
                f"--config.data.train_file={tsv}", f"--config.data.eval_file={tsv}", "--config.train.num_steps=8",
                "--config.train.progress_bar=false", *extra)
  assert result.returncode != 0
  assert expected in result.stderr, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert _files(os.path.join(workdir, "checkpoints")) == before


def test_vocab_that_does_not_match_the_checkpoint_is_named(tiny_config, tmp_path):
  workdir = str(tmp_path / "w")
  loop.run(_tiny(tiny_config, num_steps=2, checkpoint_every=2), workdir)
  before = _files(os.path.join(workdir, "checkpoints"))
  vocab = os.path.join(workdir, "vocab.txt")
  with open(vocab, encoding="utf-8") as f:
    tokens = f.read().split("\n")
  with open(vocab, "w", encoding="utf-8") as f:
    f.write("\n".join(tokens[:-20]))
  with pytest.raises(ValueError, match=r"vocab.txt has \d+ tokens but the checkpoint's vocab has 512"):
    loop.run(_tiny(tiny_config, num_steps=4), workdir)
  assert _files(os.path.join(workdir, "checkpoints")) == before


def _mount_tmpfs(path, size):
  os.makedirs(path, exist_ok=True)
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
  return result.returncode == 0


def test_unwritable_workdir_is_named(tmp_path):
  target = tmp_path / "ro"
  if os.geteuid() == 0:
    if not _mount_tmpfs(target, "1m"):
      pytest.skip("cannot mount a read-only tmpfs here")
    subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)
  else:
    target.mkdir()
    target.chmod(0o500)
  try:
    result = _cli(*SMOKE, "--workdir", str(target / "w"))
    assert result.returncode != 0 and f"workdir {target / 'w'} is not writable" in result.stderr
  finally:
    if os.geteuid() == 0:
      subprocess.run(["umount", str(target)])


def test_full_disk_during_a_save_stops_cleanly_and_keeps_earlier_checkpoints(tmp_path):
  disk = tmp_path / "disk"
  if os.geteuid() != 0 or not _mount_tmpfs(disk, "3m"):
    pytest.skip("needs root to mount a small tmpfs")
  try:
    workdir = str(disk / "w")
    result = _cli(*SMOKE, "--workdir", workdir, "--config.train.num_steps=200", "--config.train.checkpoint_every=1",
                  "--config.train.keep_checkpoints=1000", "--config.train.eval_max_batches=1")
    assert result.returncode != 0
    assert "failed" in result.stderr and "are intact" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr.split("flaxlm: saving")[-1]  # Our last word is one clear line.
    committed = sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())
    assert committed
    state = _state(workdir, committed[-1])  # The newest committed checkpoint loads whole.
    assert int(state["step"]) == committed[-1]
  finally:
    subprocess.run(["umount", str(disk)])


def test_host_memory_stays_flat_over_many_checkpoint_saves(tmp_path):
  result = _cli(*SMOKE, "--workdir", str(tmp_path / "w"), "--config.train.num_steps=55",
                "--config.train.checkpoint_every=1", "--config.train.log_every=1", "--config.train.keep_checkpoints=2",
                "--config.optimizer.schedule_steps=55")
  assert result.returncode == 0, result.stderr[-3000:]
  rss = {r["step"]: r["perf/host_rss_mb"] for r in read_metrics(str(tmp_path / "w")) if "perf/host_rss_mb" in r}
  # Medians over ten saves each: single readings jump a few percent as the allocator grows and trims.
  early = float(np.median([rss[s] for s in range(3, 13)]))
  late = float(np.median([rss[s] for s in range(45, 55)]))
  print(f"host RSS, median around 5 saves {early:.1f} MiB, around 50 saves {late:.1f} MiB, "
        f"change {100 * (late / early - 1):+.1f}%")
  assert late <= early * 1.05
