"""The training loop end to end on a tiny model: learning, exact resume, accumulation, sharding, eval."""

import copy
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from flaxlm.data import pipeline, sources
from flaxlm.train import loop
from flaxlm.train.metrics import read_metrics


def _config(base, **overrides):
  c = copy.deepcopy(base)
  for key, value in overrides.items():
    section, name = key.split("__")
    c[section][name] = value
  return c


def _losses(workdir):
  return {r["step"]: r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r}


def _params(workdir, step):
  with ocp.CheckpointManager(f"{workdir}/checkpoints") as manager:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return jax.tree.map(np.asarray, restored["state"]["params"])


def test_loss_falls(tiny_config, tmp_path):
  c = _config(tiny_config, train__num_steps=40, train__log_every=10, train__checkpoint_every=0)
  final = loop.run(c, str(tmp_path))
  losses = _losses(str(tmp_path))
  assert losses[40] < losses[10] - 0.3, losses
  assert final["loss"] < np.log(512) - 0.6  # Well below guessing uniformly over the 512-token vocab.
  records = read_metrics(str(tmp_path))
  perf = [r for r in records if "perf/tokens_per_sec" in r]
  assert perf and all(r["perf/tokens_per_sec"] > 0 and 0 < r["perf/mfu"] < 1 for r in perf)
  assert final["loss"] < losses[10] and final["num_predictions"] > 0
  assert (tmp_path / "config.json").exists() and (tmp_path / "vocab.txt").exists()
  assert list((tmp_path / "tensorboard").iterdir())


def test_resume_repeats_the_uninterrupted_run_exactly(tiny_config, tmp_path):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  loop.run(tiny_config, straight)
  loop.run(tiny_config, resumed)
  # Pretend the second run died after committing step 4: drop its later checkpoint and rerun.
  shutil.rmtree(f"{resumed}/checkpoints/8")
  loop.run(tiny_config, resumed)
  assert _losses(resumed) == _losses(straight)
  assert [r["step"] for r in read_metrics(resumed)] == [r["step"] for r in read_metrics(straight)]
  a, b = _params(straight, 8), _params(resumed, 8)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_gradient_accumulation_matches_the_full_batch(tiny_config, tmp_path):
  base = _config(tiny_config, model__dropout_rate=0.0, model__attention_dropout_rate=0.0, train__num_steps=4,
                 train__log_every=1, train__checkpoint_every=0)
  loop.run(base, str(tmp_path / "full"))
  loop.run(_config(base, train__grad_accum_steps=2), str(tmp_path / "accum"))
  full, accum = _losses(str(tmp_path / "full")), _losses(str(tmp_path / "accum"))
  assert full.keys() == accum.keys()
  for step in full:
    assert accum[step] == pytest.approx(full[step], rel=1e-4)


def test_fsdp_and_tensor_parallel_mesh_gives_the_same_losses(tiny_config, tmp_path):
  base = _config(tiny_config, train__num_steps=4, train__log_every=1, train__checkpoint_every=0)
  loop.run(base, str(tmp_path / "data"))
  loop.run(_config(base, mesh__data=2, mesh__fsdp=2, mesh__tensor=2), str(tmp_path / "mixed"))
  data, mixed = _losses(str(tmp_path / "data")), _losses(str(tmp_path / "mixed"))
  for step in data:
    assert mixed[step] == pytest.approx(data[step], rel=1e-4)


def test_eval_covers_the_whole_split_with_a_partial_last_batch(tiny_config, tiny_tokenizer, tmp_path):
  c = _config(tiny_config, train__num_steps=1, train__eval_max_batches=0, train__eval_batch_size=24,
              train__checkpoint_every=0)
  final = loop.run(c, str(tmp_path))
  docs = sources.text_source(c.data, "validation")
  cut = pipeline.DocumentToSequences(tiny_tokenizer, c.data.max_seq_len)
  sequences = [s for i in range(len(docs)) for s in cut.flat_map(docs[i])]
  assert final["num_sequences"] == len(sequences)
  assert final["num_tokens"] == sum(len(s["input_ids"]) for s in sequences)


def test_a_finished_run_does_not_train_again(tiny_config, tmp_path):
  c = _config(tiny_config, train__num_steps=2, train__checkpoint_every=0)
  loop.run(c, str(tmp_path))
  before = read_metrics(str(tmp_path))
  assert loop.run(c, str(tmp_path)) == {}
  assert read_metrics(str(tmp_path)) == before


def test_save_params_then_load_params_round_trips(tiny_config, tmp_path):
  from flaxlm.train.checkpoint import load_params, save_params
  c = _config(tiny_config, train__num_steps=2, train__checkpoint_every=0)
  loop.run(c, str(tmp_path / "run"))
  run = loop.Run(c, str(tmp_path / "run"))
  trained = load_params(str(tmp_path / "run"), run.abstract_state.params)  # From a full training checkpoint.
  np.testing.assert_array_equal(np.asarray(jax.tree.leaves(trained)[0]),
                                jax.tree.leaves(_params(str(tmp_path / "run"), 2))[0])
  save_params(str(tmp_path / "model"), trained)
  again = load_params(str(tmp_path / "model"), run.abstract_state.params)
  for x, y in zip(jax.tree.leaves(trained), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_cpu_train_step_compiles_with_the_memory_optimised_schedule(tiny_config, tmp_path, monkeypatch):
  """The scheduler option reaches XLA: the step's temporaries come out below the default schedule's."""
  from flaxlm import parallel
  run = loop.Run(tiny_config, str(tmp_path))
  state = run.init_state()
  ids = np.random.default_rng(0).integers(5, 512, (16, 64)).astype(np.int32)
  rows = {"input_ids": ids, "segment_ids": np.ones_like(ids), "token_type_ids": np.zeros_like(ids),
          "positions": np.broadcast_to(np.arange(64, dtype=np.int32), ids.shape).copy(),
          "word_start": np.ones_like(ids)}
  with parallel.sharding_context(run.mesh, run.rules):
    batch = run.put_batch(rows)
    ours = run._step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes
    default = jax.jit(loop.make_train_step(run.task, run.tx, run.schedule, 1), donate_argnums=(0,)).lower(
        state, batch).compile().memory_analysis().temp_size_in_bytes
  assert ours < 0.97 * default, (ours, default)
  assert loop.compiler_options() == {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED")
  assert loop.compiler_options() is None  # The user's choice in XLA_FLAGS is left alone.
