"""The one training loop, for every task.

Read top to bottom: the compiled train and eval steps, then `run`, which builds the state on the
mesh, resumes from the newest checkpoint, trains with periodic logging, evaluation and
checkpoints, and hands the trained params to the task at the end. The loop knows nothing about
any particular task beyond the interface documented in `flaxlm.tasks`.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm import tqdm

from flaxlm import config as config_lib
from flaxlm import parallel
from flaxlm.data import build_tokenizer, pipeline, tokenizer_file
from flaxlm.tasks import get_task
from flaxlm.train import flops
from flaxlm.train import checkpoint as checkpoint_lib
from flaxlm.train.checkpoint import Checkpointer, abstract_like
from flaxlm.train.metrics import MetricsWriter
from flaxlm.train.optimizer import learning_rate_schedule, make_optimizer
from flaxlm.train.state import TrainState

EVAL_SEED_OFFSET = 1_000_003  # Eval masks: fixed across evaluations, distinct from training's.


# ----------------------------------------------------------------------------- steps


def make_train_step(task, tx, schedule, grad_accum_steps: int, axis_name: str | None = None, replicas: int = 1):
  """(state, batch) -> (state, metrics); gradients of the summed loss over micro-batches, then / weight.

  Masking runs once on the whole batch, so the update equals the unaccumulated one up to float
  rounding whatever grad_accum_steps is; micro-batch i takes rows i, i+A, i+2A, ... so each one
  stays spread over every data-parallel device. An update whose loss or gradients are not finite
  is never applied: params and optimizer state keep their values, and the metric
  `skipped_updates` says so (what happens next is the loop's train.nonfinite policy).

  Under pmap (`axis_name` set, `replicas` devices) each device holds a slice of the batch: masks
  are drawn for the whole batch and sliced, and sums are psum-ed before any division, so the
  update equals the jit one; dropout draws differ per device.
  """

  def micro_loss(params, batch, rng):
    loss_sum, weight, metrics = task.loss(params, batch, rng, train=True)
    return loss_sum, (weight, metrics)

  grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

  def train_step(state: TrainState, batch):
    mask_rng, dropout_rng = jax.random.split(state.step_rng())
    rows = None
    if axis_name:
      index = jax.lax.axis_index(axis_name)
      rows_here = jax.tree.leaves(batch)[0].shape[0]
      rows = (index * rows_here, replicas * rows_here)
      dropout_rng = jax.random.fold_in(dropout_rng, index)
    batch = task.prepare_batch(batch, mask_rng, rows)
    if grad_accum_steps == 1:
      (loss_sum, (weight, metrics)), grads = grad_fn(state.params, batch, dropout_rng)
    else:
      micro = jax.tree.map(
          lambda x: x.reshape(x.shape[0] // grad_accum_steps, grad_accum_steps, *x.shape[1:]).swapaxes(0, 1), batch)

      def accumulate(carry, inputs):
        index, micro_batch = inputs
        (l, (w, m)), g = grad_fn(state.params, micro_batch, jax.random.fold_in(dropout_rng, index))
        return jax.tree.map(jnp.add, carry, (l, w, m, g)), None

      shapes = jax.eval_shape(lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], micro), dropout_rng))
      (l0, (w0, m0)), g0 = jax.tree.map(jnp.zeros_like, shapes)
      (loss_sum, weight, metrics, grads), _ = jax.lax.scan(
          accumulate, (l0, w0, m0, g0), (jnp.arange(grad_accum_steps), micro))
    if axis_name:
      loss_sum, weight, metrics, grads = jax.lax.psum((loss_sum, weight, metrics, grads), axis_name)
    grads = jax.tree.map(lambda g: g / jnp.maximum(weight, 1.0), grads)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss_sum) & jnp.isfinite(grad_norm)

    def apply(grads, opt_state, params):
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    # Decided from the loss and the gradients (finite gradients give a finite update), and as a
    # branch rather than a select of old and new values: the update then writes into the donated
    # buffers, where a select would keep old and new optimizer state alive together.
    params, opt_state = jax.lax.cond(finite, apply, lambda _, opt_state, params: (params, opt_state),
                                     grads, state.opt_state, state.params)
    skipped = 1 - finite.astype(jnp.int32)
    metrics = {**metrics, "grad_norm": (grad_norm, jnp.float32(1.0)),
               "learning_rate": (schedule(state.step), jnp.float32(1.0)),
               "skipped_updates": (skipped.astype(jnp.float32), None)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         skipped_updates=state.skipped_updates + skipped), metrics

  return train_step


def compiler_options() -> dict | None:
  """XLA options for flaxlm's compiled programs: on CPU, the memory-optimised scheduler.

  XLA:CPU's default schedule hoists work that depends only on the parameters (transposed weight copies,
  broadcast LayerNorm scales) to the start of the step and keeps it alive into the backward pass; the
  memory-optimised one lowers a BERT-base train step's temporaries by a fifth at the same speed
  (see README, Performance). A scheduler named in XLA_FLAGS wins.
  """
  if jax.default_backend() != "cpu" or "xla_cpu_scheduler_type" in os.environ.get("XLA_FLAGS", ""):
    return None
  return {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def _add_metrics(total, new):
  return new if total is None else jax.tree.map(jnp.add, total, new)


# ----------------------------------------------------------------------------- setup


class Run:
  """Everything built from a config for one workdir: tokenizer, task, mesh, state, compiled steps."""

  def __init__(self, config, workdir: str, devices=None):
    config_lib.validate(config)
    self.config = config
    self.workdir = workdir
    self.tokenizer = build_tokenizer(config, workdir)
    self.task = get_task(config, self.tokenizer)
    self.mesh = parallel.make_mesh(config.mesh, devices)
    self.rules = parallel.axis_rules(config.mesh)
    t = config.train
    self.schedule = learning_rate_schedule(config.optimizer, t.num_steps)
    self.tx = make_optimizer(config.optimizer, t.num_steps)
    self.batch_sharding = parallel.batch_sharding(self.mesh, self.rules)
    self.pmap = config.parallelism == "pmap"
    data_parallel = jax.device_count() if self.pmap else self.batch_sharding.num_devices // np.prod(
        [self.mesh.shape[a] for a in parallel.MESH_AXES if a not in _batch_axes(self.batch_sharding)])
    self.global_batch_size = t.per_device_batch_size * data_parallel if t.per_device_batch_size else t.batch_size
    for key, size, per in (("train.batch_size", self.global_batch_size, data_parallel * t.grad_accum_steps),
                           ("train.eval_batch_size", t.eval_batch_size, data_parallel)):
      if size % per or size % jax.process_count():
        raise config_lib.ConfigError(
            f"config.{key}: {size} rows cannot be split evenly over {data_parallel} data-parallel devices"
            + (f" x {t.grad_accum_steps} accumulation steps" if key == "train.batch_size" else "")
            + f" on {jax.process_count()} process(es)")
    self.local_batch_size = self.global_batch_size // jax.process_count()
    self.local_eval_batch_size = t.eval_batch_size // jax.process_count()
    self.shards = pipeline.process_shards(config.data.shards, jax.process_index(), jax.process_count())
    if self.local_batch_size % len(self.shards):
      raise config_lib.ConfigError(f"config.data.shards: {len(self.shards)} shards per process cannot split "
                                   f"{self.local_batch_size} rows evenly")

    def init_state(rng):
      param_rng, state_rng = jax.random.split(rng)
      params = self.task.init_params(param_rng, self.task.dummy_batch(1))
      return TrainState(step=jnp.int32(0), params=params, opt_state=self.tx.init(params), rng=state_rng,
                        skipped_updates=jnp.int32(0))

    options = compiler_options()
    with parallel.sharding_context(self.mesh, self.rules):
      boxed = jax.eval_shape(init_state, jax.random.PRNGKey(config.seed))
      self.state_shardings = parallel.logical_to_sharding(boxed, self.mesh, self.rules)
      self._init = jax.jit(lambda rng: nn.meta.unbox(init_state(rng)), out_shardings=self.state_shardings,
                           compiler_options=options)
    self.abstract_state = abstract_like(nn.meta.map_axis_meta(lambda box: box.value, boxed), self.state_shardings)
    with parallel.sharding_context(self.mesh, self.rules):
      replicated = parallel.replicated(self.mesh)
      if self.pmap:
        step = make_train_step(self.task, self.tx, self.schedule, t.grad_accum_steps, "devices", jax.device_count())
        self._step = jax.pmap(step, axis_name="devices", donate_argnums=(0,))
      else:
        self._step = jax.jit(make_train_step(self.task, self.tx, self.schedule, t.grad_accum_steps),
                             in_shardings=(self.state_shardings, self.batch_sharding),
                             out_shardings=(self.state_shardings, replicated), donate_argnums=(0,),
                             compiler_options=options)
      self.eval_step = jax.jit(self.task.eval_step,
                               in_shardings=(self.state_shardings.params, self.batch_sharding, replicated),
                               out_shardings=(replicated, replicated), compiler_options=options)
    self.num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.abstract_state.params))

  def init_state(self) -> TrainState:
    """Freshly initialised state, sharded on the mesh (one copy; see `placed`)."""
    with parallel.sharding_context(self.mesh, self.rules):
      state = self._init(jax.random.PRNGKey(self.config.seed))
    # Runs once: its compiled program (about 120 MB for BERT-base on CPU) would otherwise stay resident.
    self._init.clear_cache()
    return state

  def train_step(self, state: TrainState, batch):
    """One compiled training step: (state, batch) -> (state, metrics); the state's buffers are donated."""
    if self.pmap:  # pmap runs outside the mesh; its psum-ed metrics are equal on every device.
      state, metrics = self._step(state, batch)
      return state, jax.tree.map(lambda x: x[0], metrics)
    with parallel.sharding_context(self.mesh, self.rules):
      return self._step(state, batch)

  def placed(self, state: TrainState) -> TrainState:
    """The state as the train step takes it: as is under jit, a copy per local device under pmap."""
    if not self.pmap:
      return state
    n = jax.local_device_count()
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *x.shape)), state)

  def single(self, state: TrainState) -> TrainState:
    """One copy of the state, on the mesh shardings (for checkpoints, eval and prediction)."""
    if not self.pmap:
      return state
    return jax.device_put(jax.tree.map(lambda x: x[0], state), self.state_shardings)

  def train_batches(self):
    """This process's stream of training batches (its shards' rows, in shard order)."""
    shard_rows = self.local_batch_size // len(self.shards)
    return pipeline.ShardedBatches(lambda s, n: self.task.train_batches(shard_rows, s, n), self.shards,
                                   self.config.data.shards or jax.process_count())

  def put_batch(self, local_batch):
    """This process's numpy rows -> the batch the train step takes (global and sharded, or per device)."""
    if self.pmap:
      n = jax.local_device_count()
      return {k: v.reshape(n, v.shape[0] // n, *v.shape[1:]) for k, v in local_batch.items()}
    return parallel.global_batch(local_batch, self.batch_sharding)

  def evaluate(self, params) -> dict[str, float]:
    """Metrics over each whole eval set (or train.eval_max_batches batches of it).

    With several processes, each evaluates its share in lockstep (a process out of batches feeds
    empty ones) and the collectors see every process's rows, so all report the same metrics.
    """
    limit = self.config.train.eval_max_batches
    eval_rng = jax.random.PRNGKey(self.config.seed + EVAL_SEED_OFFSET)
    eval_sets = self.task.eval_sets(self.local_eval_batch_size, jax.process_index(), jax.process_count())
    results = {}
    with parallel.sharding_context(self.mesh, self.rules):
      for name, batches in eval_sets.items():
        local = list(itertools.islice(batches, limit or None))
        count = len(local)
        if jax.process_count() > 1:
          count = int(np.max(multihost_utils.process_allgather(np.int32(count))))
        if count == 0:
          raise ValueError(f"eval set {name or 'eval'} produced no batches")
        empty = {k: np.zeros_like(v) for k, v in (local[0] if local else
                                                  self.task.dummy_batch(self.local_eval_batch_size)).items()}
        totals, collector = None, self.task.eval_collector(name)
        for index in range(count):
          local_batch = local[index] if index < len(local) else empty
          sums, outputs = self.eval_step(params, parallel.global_batch(local_batch, self.batch_sharding),
                                         jax.random.fold_in(eval_rng, index))
          totals = _add_metrics(totals, sums)
          if jax.process_count() > 1:
            local_batch = multihost_utils.process_allgather(local_batch, tiled=True)
          collector.add(local_batch, jax.device_get(outputs))
        results.update(collector.result(jax.device_get(totals)))
    return results

  def load_pretrained(self, state: TrainState) -> TrainState:
    """`state` with every top-level param tree that config.init_from also holds (encoder, pooler, decoder, ...)."""
    source = self.config.init_from
    available = jax.tree.map(lambda x: x.shape, checkpoint_lib.params_metadata(source))
    shared = [k for k in state.params if k in available]
    if not {"encoder", "decoder"} & set(shared):  # The stack itself: BERT's encoder, or a causal LM's decoder.
      raise ValueError(f"config.init_from: {source} holds no encoder or decoder params (it has {sorted(available)}); "
                       f"this run's model has {sorted(state.params)}")
    target = {k: self.abstract_state.params[k] for k in shared}
    for path, want in jax.tree_util.tree_flatten_with_path(target)[0]:
      node = available
      for key in path:
        node = node.get(key.key) if isinstance(node, dict) else None
      name = "/".join(str(k.key) for k in path)
      if node is None:
        raise ValueError(f"config.init_from: {source} lacks the tensor {name}")
      if tuple(node) != tuple(want.shape):
        raise ValueError(f"config.init_from: tensor {name} has shape {tuple(node)} in {source}, "
                         f"but this run's model needs {tuple(want.shape)}")
    loaded = checkpoint_lib.load_params(source, target)
    return state.replace(params={**state.params, **loaded})


def _batch_axes(sharding) -> tuple:
  axes = sharding.spec[0]
  return tuple(axes) if isinstance(axes, (tuple, list)) else ((axes,) if axes else ())


# ----------------------------------------------------------------------------- the loop


class Interrupted(Exception):
  """Training stopped on a signal after committing a checkpoint at the current step."""


class _StopSignal:
  """Turns SIGTERM (a preemption notice) into a flag the loop checks between steps."""

  def __init__(self):
    self.received = None
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread: leave signals alone.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class NonFiniteError(Exception):
  """A step's loss or gradients were not finite under train.nonfinite=halt."""


def run(config, workdir: str) -> dict[str, float]:
  """Trains (or resumes) the run in `workdir`; returns the final eval metrics."""
  config = config_lib.with_pretrained_model(config)
  config_lib.validate(config)  # Before anything is written.
  is_main = jax.process_index() == 0
  _check_writable(workdir)
  log = tqdm.write if is_main else (lambda *_: None)
  t = config.train

  run_ = Run(config, workdir)
  checkpoints = Checkpointer(workdir, keep=t.keep_checkpoints)
  if checkpoints.all_steps():
    _check_resumable(run_, checkpoints)
  train_iter = run_.train_batches()
  restored = checkpoints.restore_latest(run_.abstract_state, t.on_damaged_checkpoint, log)
  if restored is not None:
    start_step, state, data_state = restored
    train_iter.set_state(data_state)
    log(f"Resumed from {checkpoints.directory}/{start_step} (step {start_step} of {t.num_steps}).")
  else:
    start_step = 0
    state = run_.init_state()
    if config.init_from:
      state = run_.load_pretrained(state)
      log(f"Initialised {sorted(set(state.params) & set(checkpoint_lib.params_metadata(config.init_from)))} "
          f"from {config.init_from}.")
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config_lib.to_json(config))
  writer = MetricsWriter(workdir, resume_step=start_step, enabled=is_main)

  tokens_per_step = run_.global_batch_size * run_.task.tokens_per_row()
  flops_per_step = run_.task.train_flops_per_row() * run_.global_batch_size
  on_cpu = jax.devices()[0].platform == "cpu"
  # Simulated CPU devices share the host's cores, so the host's matmul peak is the whole budget.
  peak_flops = (flops.peak_flops_per_device(t.peak_flops) if on_cpu and not t.peak_flops
                else flops.peak_flops_per_device(t.peak_flops) * jax.device_count())
  log(f"flaxlm: task {config.task.name}, {run_.num_params / 1e6:.2f}M params, vocab {run_.tokenizer.vocab_size}, "
      f"{jax.device_count()} {jax.devices()[0].platform} device(s), mesh {dict(run_.mesh.shape)}, "
      f"{config.parallelism}, batch {run_.global_batch_size} x {config.data.max_seq_len} tokens, workdir {workdir}")

  final_eval: dict[str, float] = {}
  try:
    if start_step >= t.num_steps:
      log(f"Workdir {workdir} already holds a finished run (step {start_step}); delete it to train again.")
    else:
      state, final_eval = _train(run_, run_.placed(state), train_iter, checkpoints, writer, start_step,
                                 tokens_per_step, flops_per_step, peak_flops, log, is_main)
      state = run_.single(state)
    checkpoints.close()
  except BaseException:
    try:  # Let committed saves finish; the error that stopped the run is the one to report.
      checkpoints.close()
    except Exception:  # noqa: BLE001
      pass
    raise
  finally:
    writer.close()
  if is_main:
    run_.task.after_training(jax.device_get(state.params), log)
  return final_eval


def _check_writable(workdir: str) -> None:
  """Fails naming the workdir when it cannot be created or written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test"):
      pass
  except OSError as e:
    raise ValueError(f"workdir {workdir} is not writable ({type(e).__name__}: {e})") from e


def _check_resumable(run_: Run, checkpoints: Checkpointer) -> None:
  """Refuses to resume a checkpoint made by a different run: other identity keys, or other shapes."""
  saved_path = os.path.join(run_.workdir, "config.json")
  if os.path.isfile(saved_path):
    with open(saved_path, encoding="utf-8") as f:
      saved = config_lib.from_json(f.read())
    differences = config_lib.resume_differences(saved, run_.config)
    if differences:
      keys = ", ".join(repr(d.split(":")[0]) for d in differences)
      raise config_lib.ConfigError(
          f"workdir {run_.workdir} holds checkpoints of a run with another config; refusing to resume with: "
          + "; ".join(differences) + f". To resume anyway, pass --config.train.allow_changed_keys=\"({keys},)\"; "
          "to start a new run, use a new workdir")
  try:
    stored = checkpoint_lib.params_metadata(run_.workdir)
  except Exception:  # noqa: BLE001  (an unreadable newest checkpoint is restore_latest's business)
    return
  wanted = jax.tree_util.tree_flatten_with_path(run_.abstract_state.params)[0]
  stored_flat = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(stored)[0]}
  for path, want in wanted:
    name = jax.tree_util.keystr(path)
    have = stored_flat.get(name)
    if have is not None and tuple(have) != tuple(want.shape):
      hint = ""
      if "embeddings']['word']" in name:
        hint = (f": the tokenizer file {tokenizer_file(run_.workdir)} has {run_.tokenizer.vocab_size} tokens but the "
                f"checkpoint's vocab has {have[0]}")
      raise ValueError(f"checkpoint in {checkpoints.directory} has {name} of shape {tuple(have)}, this run's model "
                       f"needs {tuple(want.shape)}{hint}")


def _train(run_: Run, state, train_iter, checkpoints, writer, start_step, tokens_per_step, flops_per_step,
           peak_flops, log, is_main) -> tuple[TrainState, dict[str, float]]:
  config, t = run_.config, run_.config.train
  # Redraw often on a terminal; in a log file (CI, a cluster job) a line every 30 s is plenty.
  bar = tqdm(total=t.num_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
             disable=not (is_main and t.progress_bar), mininterval=0.1 if sys.stderr.isatty() else 30.0)
  # Metrics average over every step since the last log; throughput is timed from the end of the
  # first (compiling) step of this process, so it excludes compilation.
  interval_metrics, timer_start, timed_steps, interval_steps, paused = None, None, 0, 0, 0.0
  eval_metrics: dict[str, float] = {}
  best = BestCheckpoint(run_.workdir, run_.task.best_metric)
  guard = _NonFiniteGuard(run_.workdir, t.nonfinite, log)
  step = start_step
  with _StopSignal() as stop:
    while step < t.num_steps:
      local_batch = next(train_iter)
      state, metrics = run_.train_step(state, run_.put_batch(local_batch))
      step += 1
      guard.watch(step, metrics["skipped_updates"][0], local_batch)
      interval_metrics = _add_metrics(interval_metrics, metrics)
      interval_steps += 1
      if timer_start is None:
        jax.block_until_ready(state.step)
        timer_start = time.perf_counter()
      else:
        timed_steps += 1
      bar.update(1)

      if step % t.log_every == 0 or step == t.num_steps:
        guard.check_all()
        values = run_.task.summarize(jax.device_get(interval_metrics))
        record = {f"train/{k}": v for k, v in values.items()}
        record["train/skipped_updates_total"] = float(np.asarray(state.skipped_updates).reshape(-1)[0])
        record["perf/host_rss_mb"] = _resident_megabytes()
        if timed_steps:
          elapsed = time.perf_counter() - timer_start - paused
          record["perf/step_time"] = elapsed / timed_steps
          record["perf/tokens_per_sec"] = tokens_per_step * timed_steps / elapsed
          record["perf/mfu"] = flops_per_step * timed_steps / elapsed / peak_flops
          if "num_examples" in values:  # Tasks with examples of their own (packed several to a row).
            record["perf/examples_per_sec"] = values["num_examples"] / interval_steps * timed_steps / elapsed
          bar.set_postfix(loss=f"{values['loss']:.3f}", **_headline(values),
                          tok_s=f"{record['perf/tokens_per_sec']:.0f}")
        writer.write(step, record)
        interval_metrics, timer_start, timed_steps, interval_steps, paused = None, time.perf_counter(), 0, 0, 0.0

      if (t.eval_every and step % t.eval_every == 0) or step == t.num_steps:
        eval_start = time.perf_counter()
        eval_metrics = run_.evaluate(run_.single(state).params)
        writer.write(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
        log(f"step {step}: eval " + ", ".join(f"{k} {v:.4g}" for k, v in eval_metrics.items()))
        best.update(step, eval_metrics, run_.single(state).params, log)
        paused += time.perf_counter() - eval_start  # Evaluation time is not training throughput.

      if (t.checkpoint_every and step % t.checkpoint_every == 0) or step == t.num_steps or stop.received:
        guard.check_all()  # Under "halt", no checkpoint is written after a non-finite step.
        checkpoints.save(step, run_.single(state), train_iter.get_state())
      if stop.received:
        checkpoints.wait()
        bar.close()
        raise Interrupted(f"received {stop.received}: saved a checkpoint at step {step} in "
                          f"{checkpoints.directory}; rerun the same command to resume")
  bar.close()
  checkpoints.wait()
  return state, eval_metrics


class _NonFiniteGuard:
  """Reads each step's skipped-update flag one step late (so the host never waits on the device),
  and under train.nonfinite=halt stops at the first non-finite step, saving its batch."""

  def __init__(self, workdir: str, policy: str, log):
    self.workdir, self.policy, self.log = workdir, policy, log
    self.pending = collections.deque()

  def watch(self, step: int, skipped, local_batch) -> None:
    """Queues this step's flag; checks the ones whose steps have surely finished."""
    self.pending.append((step, skipped, local_batch))
    while len(self.pending) > 2:
      self._check(*self.pending.popleft())

  def check_all(self) -> None:
    """Checks every queued step (before logging and before any checkpoint)."""
    while self.pending:
      self._check(*self.pending.popleft())

  def _check(self, step: int, skipped, local_batch) -> None:
    if self.policy != "halt" or float(skipped) == 0.0:
      return
    path = os.path.join(self.workdir, f"nonfinite_batch_step{step}.npz")
    if jax.process_index() == 0:
      np.savez(path, **local_batch)
    raise NonFiniteError(
        f"step {step}: the loss or gradients were not finite, so the update was not applied and the "
        f"run stopped (train.nonfinite=halt); the batch is saved in {path}; checkpoints hold only finite "
        "values. Rerun with --config.train.nonfinite=skip to skip such steps, or fix the data or learning rate")


def _resident_megabytes() -> float:
  """This process's resident memory in MiB (Linux /proc), for spotting host-memory growth."""
  try:
    with open("/proc/self/statm", encoding="ascii") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
  except OSError:
    return float("nan")


class BestCheckpoint:
  """Keeps the params of the best evaluation so far in WORKDIR/best (a model directory), by the
  task's metric; best/best.json records the step and value, so a resumed run keeps comparing."""

  def __init__(self, workdir: str, metric: tuple[str, str] | None):
    self.metric = metric
    self.directory = os.path.join(workdir, "best")
    self.record_path = os.path.join(self.directory, "best.json")
    self.record = None
    if metric and os.path.isfile(self.record_path):
      with open(self.record_path, encoding="utf-8") as f:
        self.record = json.load(f)

  def update(self, step: int, metrics: dict[str, float], params, log) -> None:
    """Saves `params` when `metrics` beat the best so far."""
    if not self.metric:
      return
    name, mode = self.metric
    value = metrics[name]
    if self.record is not None:
      previous = self.record["value"]
      if not (value > previous if mode == "max" else value < previous):
        return
    # Written beside the old best and swapped in whole, so a crash never leaves no best at all.
    staging = self.directory + ".new"
    if os.path.isdir(staging):
      shutil.rmtree(staging)
    checkpoint_lib.save_params(staging, params, step)
    self.record = {"step": int(step), "metric": name, "value": float(value)}
    if jax.process_index() == 0:
      workdir = os.path.dirname(self.directory)
      for file in ("config.json", os.path.basename(tokenizer_file(workdir))):
        shutil.copyfile(os.path.join(workdir, file), os.path.join(staging, file))
      with open(os.path.join(staging, "best.json"), "w", encoding="utf-8") as f:
        json.dump(self.record, f)
      if os.path.isdir(self.directory):
        shutil.rmtree(self.directory)
      os.replace(staging, self.directory)
    log(f"step {step}: new best {name} {value:.4g}, params saved to {self.directory}")


def _headline(values: dict[str, float]) -> dict[str, str]:
  """The progress bar's task metric besides the loss (e.g. MLM accuracy)."""
  return {k.replace("mlm_", ""): f"{v:.3f}" for k, v in values.items() if k.endswith("accuracy")}
