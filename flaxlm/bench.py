"""Benchmarks: masked-LM train steps against the Hugging Face peers, and SST-2 fine-tuning with packing.

  python -m flaxlm.bench                         # flaxlm: bert-small and bert-base, seq 128 and 512
  python -m flaxlm.bench --peers --batch 8       # + HF PyTorch BertForMaskedLM, HF FlaxBertForMaskedLM
  python -m flaxlm.bench --finetune              # SST-2 examples/s: packed rows against padding to 128

A train step is forward, backward and optimizer update (AdamW, global-norm clipping at 1.0, dropout
0.1) on rows of random token ids, timed after compilation and warm-up; the flaxlm case is the real
`Run.train_step` of `flaxlm.train.loop`, masking included. Each case runs in a process of its own,
and the cases of one shape take turns step by step (see `compare`), so load from elsewhere on the
machine falls on all of them alike. Peak memory is per process: the peak resident set during the
timed steps (the kernel's high-water mark, reset after warm-up) less the resident set once the
framework was imported, i.e. what the model, optimizer state, gradients, activations and
temporary buffers take. MFU divides by the best matmul rate a probe process measures in the same
turns (on a GPU or TPU, the published bf16 peak). Every result is one JSON object on stdout;
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import flaxlm

SIZES = {
    "bert-small": dict(hidden_size=256, num_layers=4, num_heads=4, mlp_dim=1024),
    "bert-base": dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    # Seconds per case: for the benchmark's own tests, and the SST-2 comparison's default.
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=2, mlp_dim=128),
}
FRAMEWORKS = ("flaxlm", "hf_pytorch", "hf_flax")
MASK_RATE = 0.15
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, CLS_ID, SEP_ID, MASK_ID = 0, 2, 3, 4
RESULT_PREFIX = "FLAXLM_BENCH_RESULT "
STEP_PREFIX = "FLAXLM_BENCH_STEP "
READY = "FLAXLM_BENCH_READY"
_PAUSE_S = 0.3  # After each timed step: long enough for OpenMP and Eigen threads to stop spinning.
# Modules whose import is the framework's fixed cost, loaded before the memory baseline is read.
_FRAMEWORK_MODULES = {
    "flaxlm": ("jax", "flax.linen", "optax", "flaxlm.train.loop"),
    "hf_pytorch": ("torch", "transformers.models.bert.modeling_bert"),
    "hf_flax": ("jax", "flax.linen", "optax", "transformers.models.bert.modeling_flax_bert"),
}


@dataclasses.dataclass(frozen=True)
class Case:
  """One train-step measurement: a framework running one model size at one shape."""

  framework: str
  size: str
  seq_len: int
  batch: int
  vocab_size: int = 30522
  dtype: str = "float32"

  @property
  def name(self) -> str:
    return f"{self.size}/seq{self.seq_len}/batch{self.batch}"

  def model_config(self):
    """The flaxlm ModelConfig of this size (the FLOP formulas read it)."""
    from flaxlm.models.layers import ModelConfig
    return ModelConfig(vocab_size=self.vocab_size, **SIZES[self.size], dtype=self.dtype)


# ----------------------------------------------------------------------------- arithmetic


def train_flops_per_token(cfg, seq_len: int, head_positions: int) -> float:
  """Training FLOPs per token (3x forward): the encoder, plus the MLM head at head_positions of each row."""
  from flaxlm.train import flops
  per_row = seq_len * flops.encoder_forward_flops_per_token(cfg, seq_len) + head_positions * \
      flops.mlm_head_forward_flops(cfg)
  return 3.0 * per_row / seq_len


def mfu(tokens_per_sec: float, flops_per_token: float, peak_flops: float) -> float:
  """Model FLOPs utilisation: achieved FLOP/s over the peak."""
  return tokens_per_sec * flops_per_token / peak_flops


def add_ratios(results: list[dict]) -> list[dict]:
  """Each flaxlm result gains {peer: flaxlm / peer} for tokens/s and peak memory, per case name."""
  by_case: dict[str, dict[str, dict]] = {}
  for r in results:
    by_case.setdefault(r["case"], {})[r["framework"]] = r
  for frameworks in by_case.values():
    ours = frameworks.get("flaxlm")
    if ours is None or "tokens_per_sec" not in ours:
      continue
    for peer, theirs in frameworks.items():
      if peer == "flaxlm" or "tokens_per_sec" not in theirs:
        continue
      ours.setdefault("tokens_per_sec_ratio", {})[peer] = ours["tokens_per_sec"] / theirs["tokens_per_sec"]
      if ours.get("peak_memory_mb") and theirs.get("peak_memory_mb"):
        ours.setdefault("peak_memory_ratio", {})[peer] = ours["peak_memory_mb"] / theirs["peak_memory_mb"]
  return results


# ----------------------------------------------------------------------------- inputs


def synthetic_rows(seed: int, batch: int, seq_len: int, vocab_size: int) -> np.ndarray:
  """[CLS] random non-special tokens [SEP], full rows: the same ids for every framework."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(len(SPECIALS), vocab_size, size=(batch, seq_len), dtype=np.int64).astype(np.int32)
  ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
  return ids


def host_masking(seed: int, ids: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
  """The peers' inputs and labels: 15% of the inner tokens, 80% [MASK], 10% random, 10% kept; -100 elsewhere."""
  rng = np.random.default_rng(seed)
  batch, seq_len = ids.shape
  inputs, labels = ids.copy(), np.full_like(ids, -100)
  chosen = round(MASK_RATE * (seq_len - 2))
  for row in range(batch):
    positions = 1 + rng.choice(seq_len - 2, size=chosen, replace=False)
    labels[row, positions] = ids[row, positions]
    action = rng.random(chosen)
    inputs[row, positions[action < 0.8]] = MASK_ID
    randomised = positions[(action >= 0.8) & (action < 0.9)]
    inputs[row, randomised] = rng.integers(len(SPECIALS), vocab_size, size=len(randomised))
  return inputs, labels


def write_vocab(path: str, vocab_size: int) -> str:
  """A WordPiece vocab.txt of the given size: BERT's five specials, then placeholder words."""
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join([*SPECIALS, *(f"w{i}" for i in range(vocab_size - len(SPECIALS)))]) + "\n")
  return path


# ----------------------------------------------------------------------------- the three frameworks


def _flaxlm_step(case: Case, workdir: str, overrides: dict, batches: list[np.ndarray]):
  """The real flaxlm train step (loop.Run), on the synthetic rows; masking happens inside it."""
  import jax

  from flaxlm import config as config_lib
  from flaxlm import parallel
  from flaxlm.train import loop

  c = config_lib.base_config()
  c.tokenizer.vocab_file = write_vocab(os.path.join(workdir, "bench_vocab.txt"), case.vocab_size)
  c.model.update(**SIZES[case.size], max_position_embeddings=max(512, case.seq_len), dtype=case.dtype)
  c.data.max_seq_len = case.seq_len
  c.train.update(batch_size=case.batch, progress_bar=False, peak_flops=1.0)
  for key, value in overrides.items():
    section, name = key.split(".", 1)
    c[section][name] = value
  run = loop.Run(c, os.path.join(workdir, "run"))
  state = run.init_state()
  rows = [{"input_ids": ids, "segment_ids": np.ones_like(ids), "token_type_ids": np.zeros_like(ids),
           "positions": np.broadcast_to(np.arange(case.seq_len, dtype=np.int32), ids.shape).copy(),
           "word_start": np.ones_like(ids)} for ids in batches]
  box = {"state": state, "index": 0}

  def step():
    with parallel.sharding_context(run.mesh, run.rules):
      box["state"], metrics = run.train_step(box["state"], run.put_batch(rows[box["index"] % len(rows)]))
    box["index"] += 1
    jax.block_until_ready((box["state"], metrics))

  return step, run.task.masking.max_predictions


def _hf_pytorch_step(case: Case, batches: list[np.ndarray]):
  """Hugging Face BertForMaskedLM in eager PyTorch, torch.optim.AdamW, as the Trainer runs it."""
  import torch
  import transformers

  torch.manual_seed(0)
  model = transformers.BertForMaskedLM(_hf_bert_config(transformers, case))
  model.train()
  no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
  decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
  optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-4, betas=(0.9, 0.999), eps=1e-6)
  inputs = []
  for i, ids in enumerate(batches):
    masked, labels = host_masking(i, ids, case.vocab_size)
    inputs.append({"input_ids": torch.from_numpy(masked.astype(np.int64)),
                   "attention_mask": torch.ones(ids.shape, dtype=torch.int64),
                   "token_type_ids": torch.zeros(ids.shape, dtype=torch.int64),
                   "labels": torch.from_numpy(labels.astype(np.int64))})
  index = [0]

  def step():
    loss = model(**inputs[index[0] % len(inputs)]).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    index[0] += 1

  return step, case.seq_len


def _hf_flax_step(case: Case, batches: list[np.ndarray]):
  """Hugging Face FlaxBertForMaskedLM with optax AdamW, jitted (buffers donated), as run_mlm_flax.py does."""
  import jax
  import jax.numpy as jnp
  import optax
  import transformers

  model = transformers.FlaxBertForMaskedLM(_hf_bert_config(transformers, case), seed=0,
                                           dtype=jnp.dtype(case.dtype))
  decay_mask = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) not in ("bias", "scale"), params)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, mask=decay_mask))

  def train_step(params, opt_state, batch, rng):
    def loss_fn(p):
      logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], params=p,
                     dropout_rng=rng, train=True)[0]
      label_mask = batch["labels"] >= 0
      nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(label_mask, batch["labels"], 0))
      return (nll * label_mask).sum() / label_mask.sum()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  compiled = jax.jit(train_step, donate_argnums=(0, 1))
  inputs = []
  for i, ids in enumerate(batches):
    masked, labels = host_masking(i, ids, case.vocab_size)
    inputs.append({"input_ids": jnp.asarray(masked), "attention_mask": jnp.ones(ids.shape, jnp.int32),
                   "token_type_ids": jnp.zeros(ids.shape, jnp.int32), "labels": jnp.asarray(labels)})
  box = {"params": model.params, "opt_state": tx.init(model.params), "index": 0}
  base_rng = jax.random.PRNGKey(0)

  def step():
    i = box["index"]
    box["params"], box["opt_state"], loss = compiled(box["params"], box["opt_state"], inputs[i % len(inputs)],
                                                     jax.random.fold_in(base_rng, i))
    box["index"] += 1
    jax.block_until_ready((box["params"], box["opt_state"], loss))

  return step, case.seq_len


def _hf_bert_config(transformers, case: Case):
  return transformers.BertConfig(
      vocab_size=case.vocab_size, hidden_size=SIZES[case.size]["hidden_size"],
      num_hidden_layers=SIZES[case.size]["num_layers"], num_attention_heads=SIZES[case.size]["num_heads"],
      intermediate_size=SIZES[case.size]["mlp_dim"], max_position_embeddings=max(512, case.seq_len),
      hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, pad_token_id=PAD_ID)


# ----------------------------------------------------------------------------- one case, in its own process


def _status_kb(field: str) -> int:
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
  """Returns freed heap to the system and restarts the kernel's peak-RSS count from here (Linux)."""
  import ctypes
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except OSError:
    pass
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _start_runtime(framework: str) -> None:
  """Starts the framework's runtime (device client, thread pools), a fixed cost like the import."""
  if framework == "hf_pytorch":
    import torch
    float((torch.ones(64, 64) @ torch.ones(64, 64)).sum())
  else:
    import jax.numpy as jnp
    float((jnp.ones((64, 64)) @ jnp.ones((64, 64))).sum())


def _build_case(case: Case, workdir: str, overrides: dict):
  """(step, head positions per row) for a case; the head runs at flaxlm's masked slots, the peers' every token."""
  batches = [synthetic_rows(seed, case.batch, case.seq_len, case.vocab_size) for seed in range(2)]
  if case.framework == "flaxlm":
    return _flaxlm_step(case, workdir, overrides, batches)
  if case.framework == "hf_pytorch":
    return _hf_pytorch_step(case, batches)
  return _hf_flax_step(case, batches)


def _peak_probe(dtype: str):
  """(probe, None): each call returns the published bf16 peak of a GPU or TPU, or a fresh matmul measurement."""
  import jax
  import jax.numpy as jnp

  from flaxlm.train import flops
  device = jax.devices()[0]
  published = flops.published_peak_flops(device.device_kind) if device.platform != "cpu" else None
  # Unwrapped from its cache: every round measures again, and the run keeps the best.
  return (lambda: published or flops.measured_matmul_peak.__wrapped__(1024, jnp.dtype(dtype), repeats=3)), None


def _serve(job: dict) -> None:
  """A worker process: builds its case and warms it up, then runs one step per `step` line on stdin."""
  case = Case(**job["case"]) if job["kind"] == "case" else None
  for module in _FRAMEWORK_MODULES[case.framework] if case else ("jax", "flaxlm.train.flops"):
    importlib.import_module(module)
  _start_runtime(case.framework if case else "flaxlm")
  baseline_kb = _status_kb("VmRSS")
  with tempfile.TemporaryDirectory(prefix="flaxlm-bench-") as workdir:
    step, head_positions = _build_case(case, workdir, job["overrides"]) if case else _peak_probe(job["dtype"])
    for _ in range(job["warmup"]):
      step()
    peak_reset = _reset_peak_rss()
    print(READY, flush=True)
    for line in sys.stdin:
      if line.strip() != "step":
        break
      start = time.perf_counter()
      value = step()
      print(f"{STEP_PREFIX}{time.perf_counter() - start if case else value}", flush=True)
    peak_kb = _status_kb("VmHWM")
  result = {}
  if case:
    result = {"flops_per_token": train_flops_per_token(case.model_config(), case.seq_len, head_positions),
              "head_positions_per_row": head_positions, "peak_memory_mb": (peak_kb - baseline_kb) / 1024,
              "peak_rss_mb": peak_kb / 1024, "baseline_rss_mb": baseline_kb / 1024,
              "memory_peak_is_steps_only": peak_reset}
  print(RESULT_PREFIX + json.dumps(result), flush=True)


class WorkerFailed(RuntimeError):
  """A worker process exited before answering; the message ends with its stderr."""


class _Worker:
  """The parent's handle on one worker process (stderr kept in a file, shown if it fails)."""

  def __init__(self, job: dict, env: dict):
    self.stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
    self.proc = subprocess.Popen([sys.executable, "-m", "flaxlm.bench", "--worker", json.dumps(job)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                 env=env)

  def expect(self, prefix: str) -> str:
    """The rest of the worker's next stdout line that starts with `prefix` (other lines are library chatter)."""
    for line in self.proc.stdout:
      if line.startswith(prefix):
        return line[len(prefix):].strip()
    self.proc.wait()
    self.stderr.seek(0)
    tail = "\n".join(self.stderr.read().strip().splitlines()[-12:])
    raise WorkerFailed(f"exit status {self.proc.returncode}: {tail}")

  def send(self, command: str) -> None:
    self.proc.stdin.write(command + "\n")
    self.proc.stdin.flush()

  def step(self) -> float:
    """Runs one step in the worker: its wall time in seconds (or, for the peak probe, FLOP/s)."""
    self.send("step")
    return float(self.expect(STEP_PREFIX))

  def finish(self) -> dict:
    """Ends the worker and returns its memory figures."""
    self.send("finish")
    result = json.loads(self.expect(RESULT_PREFIX))
    self.proc.wait()
    return result

  def kill(self) -> None:
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()


def compare(cases: list[Case], steps: int, warmup: int, overrides: dict, env: dict) -> list[dict]:
  """Times `cases` (one shape, several frameworks) step by step in turn, each in its own warm process.

  Taking turns step by step spreads the machine's other load evenly over the frameworks, so their
  ratios hold even when absolute figures drift; a pause after each step lets a library's spinning
  threads fall idle before the next one starts. A matmul-peak probe takes its turn each round too.
  """
  results, workers, times = {}, {}, {}
  dtypes = sorted({c.dtype for c in cases})
  probes = {}
  try:
    for dtype in dtypes:
      probes[dtype] = _Worker({"kind": "peak", "dtype": dtype, "warmup": 1, "overrides": {}}, env)
      probes[dtype].expect(READY)
    for case in cases:
      _log(f"{case.name} {case.framework}: building and warming up ...")
      worker = _Worker({"kind": "case", "case": dataclasses.asdict(case), "warmup": warmup,
                        "overrides": overrides if case.framework == "flaxlm" else {}}, env)
      try:
        worker.expect(READY)
        workers[case], times[case] = worker, []
      except WorkerFailed as e:
        results[case] = {"error": str(e)}
    load_before = os.getloadavg()[0]
    peaks = {dtype: [] for dtype in dtypes}
    for round_index in range(steps):
      for case, worker in list(workers.items()):
        try:
          times[case].append(worker.step())
        except WorkerFailed as e:
          results[case] = {"error": str(e)}
          del workers[case]
        time.sleep(_PAUSE_S)
      for dtype, probe in probes.items():
        peaks[dtype].append(probe.step())
        time.sleep(_PAUSE_S)
      _log(f"  round {round_index + 1}/{steps}: " + ", ".join(
          f"{c.framework} {times[c][-1]:.3f} s" for c in workers))
    load_after = os.getloadavg()[0]
    for case, worker in workers.items():
      results[case] = worker.finish()
      step_time = statistics.median(times[case])
      tokens_per_sec = case.batch * case.seq_len / step_time
      peak = max(peaks[case.dtype])
      results[case].update(
          tokens_per_sec=tokens_per_sec, step_time_s=step_time, step_time_min_s=min(times[case]),
          step_time_max_s=max(times[case]), timed_steps=len(times[case]), peak_flops=peak,
          mfu=mfu(tokens_per_sec, results[case]["flops_per_token"], peak),
          load_average=[round(load_before, 2), round(load_after, 2)])
    for probe in probes.values():
      probe.finish()
  finally:
    for worker in [*workers.values(), *probes.values()]:
      worker.kill()
  return [{"benchmark": "train_step", "case": c.name, "framework": c.framework, "model": c.size,
           "seq_len": c.seq_len, "batch": c.batch, "vocab_size": c.vocab_size, "dtype": c.dtype, **results[c],
           **({"flaxlm_overrides": overrides} if overrides and c.framework == "flaxlm" else {})} for c in cases]


def train_step_benchmark(args) -> list[dict]:
  """Every (size, seq_len) case for flaxlm and, with --peers, the peers; ratios added to flaxlm's."""
  env = flaxlm.subprocess_env()
  frameworks = FRAMEWORKS if args.peers else args.frameworks
  results = []
  for size in args.sizes:
    for seq_len in args.seq_lens:
      cases = [Case(fw, size, seq_len, args.batch, args.vocab_size, args.dtype if fw != "hf_pytorch" else "float32")
               for fw in frameworks]
      for result in compare(cases, args.steps, args.warmup, args.flaxlm, env):
        _log(f"{result['case']} {result['framework']}: {_summary(result)}")
        results.append(result)
  return add_ratios(results)


def _summary(r: dict) -> str:
  if "error" in r:
    return f"failed: {r['error']}"
  return (f"{r['tokens_per_sec']:.0f} tokens/s, step {r['step_time_s'] * 1e3:.0f} ms, mfu {r.get('mfu', 0):.3f}, "
          f"peak memory {r['peak_memory_mb']:.0f} MB")


# ----------------------------------------------------------------------------- SST-2: packed against padded


def sst2_config(data_dir: str, size: str, rows: int, steps: int, packed: bool, init_from: str = ""):
  """The SST-2 fine-tuning config the comparison runs (recipes.finetuning; a fresh `size` model unless init_from)."""
  from flaxlm import config as config_lib
  from flaxlm import recipes

  c = recipes.finetuning("classification", {"smoke": "true"}, set(), "flaxlm.bench --finetune")
  c.task.glue_task = "sst2"
  c.data.update(train_file=os.path.join(data_dir, "train.tsv"), eval_file=os.path.join(data_dir, "dev.tsv"),
                max_seq_len=128, pack_examples=packed)
  c.model.update(**SIZES[size])
  c.init_from = init_from
  log_every = max(1, steps // 5)
  c.train.update(batch_size=rows, num_steps=steps, log_every=log_every, eval_every=0, checkpoint_every=0,
                 progress_bar=False)
  return config_lib.with_pretrained_model(c)


def _subset_dir(data_dir: str, limit: int, out_dir: str) -> str:
  """data_dir with train.tsv cut to its first `limit` examples (dev.tsv whole), for quick runs."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(data_dir, "train.tsv"), encoding="utf-8") as f:
    lines = f.read().split("\n")
  with open(os.path.join(out_dir, "train.tsv"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines[: limit + 1]) + "\n")
  with open(os.path.join(data_dir, "dev.tsv"), encoding="utf-8") as src, \
      open(os.path.join(out_dir, "dev.tsv"), "w", encoding="utf-8") as dst:
    dst.write(src.read())
  return out_dir


def finetune_summary(records: list[dict], num_steps: int) -> dict:
  """Throughput and final dev metrics from a fine-tuning run's metrics.jsonl records."""
  perf = [r for r in records if "perf/examples_per_sec" in r]
  examples = sum(r.get("train/num_examples", 0.0) for r in records)
  evals = [r for r in records if "eval/accuracy" in r]
  if not perf or not evals:
    raise ValueError("the fine-tuning run logged no perf/examples_per_sec or no eval/accuracy; raise --finetune-steps")
  # Each logged interval's rate weighs by its length, as the total over the total time would.
  seconds = sum(r["perf/step_time"] for r in perf)
  weighted = lambda key: sum(r["perf/step_time"] * r[key] for r in perf) / seconds
  return {"examples_per_sec": weighted("perf/examples_per_sec"), "tokens_per_sec": weighted("perf/tokens_per_sec"),
          "examples_per_step": examples / num_steps, "dev_accuracy": evals[-1]["eval/accuracy"],
          "dev_examples": evals[-1]["eval/num_examples"]}


def finetune_benchmark(args) -> list[dict]:
  """Fine-tunes on SST-2 twice, packed then padded with as many examples a step; examples/s and dev accuracy."""
  import jax

  from flaxlm import recipes
  from flaxlm.train import loop
  from flaxlm.train.metrics import read_metrics

  data_dir = args.sst2_dir or os.path.join(recipes.SHARED_DATA, "sst2")
  if not os.path.isfile(os.path.join(data_dir, "train.tsv")):
    raise FileNotFoundError(f"--sst2-dir: no train.tsv in {data_dir} (set FLAXLM_SHARED_DATA or pass --sst2-dir)")
  devices = jax.device_count()
  results = []
  with tempfile.TemporaryDirectory(prefix="flaxlm-bench-sst2-") as tmp:
    if args.finetune_train_examples:
      data_dir = _subset_dir(data_dir, args.finetune_train_examples, os.path.join(tmp, "data"))
    rows = args.finetune_rows
    for packed in (True, False):
      config = sst2_config(data_dir, args.finetune_size, rows, args.finetune_steps, packed, args.init_from)
      workdir = os.path.join(tmp, "packed" if packed else "padded")
      _log(f"SST-2 {'packed' if packed else 'padded'}: {rows} rows x 128 tokens a step, {args.finetune_steps} steps")
      with contextlib.redirect_stdout(sys.stderr):  # The loop's log lines; stdout carries only results.
        loop.run(config, workdir)
      summary = finetune_summary(read_metrics(workdir), args.finetune_steps)
      results.append({"benchmark": "sst2_finetune", "rows": "packed" if packed else "padded", "batch_rows": rows,
                      "steps": args.finetune_steps, "model": args.init_from or args.finetune_size,
                      "seq_len": 128, **summary})
      _log(f"  {summary['examples_per_sec']:.1f} examples/s, {summary['examples_per_step']:.1f} examples a step, "
           f"dev accuracy {summary['dev_accuracy']:.4f}")
      # The padded run sees as many examples per step as the packed one did: same updates, same data.
      rows = max(devices, round(summary["examples_per_step"] / devices) * devices)
  packed_result, padded_result = results
  packed_result["examples_per_sec_ratio"] = packed_result["examples_per_sec"] / padded_result["examples_per_sec"]
  packed_result["dev_accuracy_difference"] = packed_result["dev_accuracy"] - padded_result["dev_accuracy"]
  return results


# ----------------------------------------------------------------------------- command line


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _csv_ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]


def _override(text: str) -> tuple[str, object]:
  key, sep, value = text.partition("=")
  if not sep or key.count(".") != 1:
    raise argparse.ArgumentTypeError(f"--flaxlm {text!r}: expected SECTION.KEY=VALUE, e.g. model.remat=dots")
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m flaxlm.bench", description=__doc__.split("\n")[0])
  p.add_argument("--sizes", type=lambda s: s.split(","), default=["bert-small", "bert-base"],
                 help=f"comma-separated model sizes from {sorted(SIZES)}")
  p.add_argument("--seq-lens", type=_csv_ints, default=[128, 512], help="comma-separated sequence lengths")
  p.add_argument("--batch", type=int, default=8, help="rows per step, every case")
  p.add_argument("--vocab-size", type=int, default=30522)
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="compute dtype of flaxlm and HF Flax (HF PyTorch on CPU stays float32)")
  p.add_argument("--steps", type=int, default=8, help="timed steps per case, taken in turns (the median is reported)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first one compiles)")
  p.add_argument("--peers", action="store_true", help="also run HF PyTorch and HF Flax BertForMaskedLM")
  p.add_argument("--frameworks", type=lambda s: s.split(","), default=["flaxlm"],
                 help=f"comma-separated, from {FRAMEWORKS} (--peers: all of them)")
  p.add_argument("--flaxlm", type=_override, action="append", default=[], metavar="SECTION.KEY=VALUE",
                 help="a flaxlm config override for its cases, e.g. model.remat=dots (repeatable)")
  p.add_argument("--finetune", action="store_true",
                 help="run the SST-2 fine-tuning comparison (packed against padded) instead")
  p.add_argument("--sst2-dir", default="", help="GLUE SST-2 train.tsv and dev.tsv (default: the shared data)")
  p.add_argument("--finetune-size", choices=sorted(SIZES), default="tiny")
  p.add_argument("--init-from", default="", help="fine-tune this flaxlm model directory instead of a fresh model")
  p.add_argument("--finetune-rows", type=int, default=8, help="packed rows per step")
  p.add_argument("--finetune-steps", type=int, default=300)
  p.add_argument("--finetune-train-examples", type=int, default=0, help="use only the first N (0: all 67,349)")
  p.add_argument("--worker", help=argparse.SUPPRESS)
  return p


def main(argv: list[str] | None = None) -> int:
  """Runs the requested benchmark and prints one JSON object per result."""
  args = _parser().parse_args(argv)
  if args.worker:
    _serve(json.loads(args.worker))
    return 0
  unknown = [s for s in args.sizes if s not in SIZES]
  if unknown:
    _parser().error(f"--sizes: unknown {unknown}; choose from {sorted(SIZES)}")
  unknown = [f for f in args.frameworks if f not in FRAMEWORKS]
  if unknown:
    _parser().error(f"--frameworks: unknown {unknown}; choose from {list(FRAMEWORKS)}")
  args.flaxlm = dict(args.flaxlm)
  results = finetune_benchmark(args) if args.finetune else train_step_benchmark(args)
  for result in results:
    print(json.dumps(result), flush=True)
  return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
  sys.exit(main())
