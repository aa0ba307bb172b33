"""What every task shares: the interface the one training loop calls, with defaults."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm.data import pipeline, sources


def ratios(totals: dict) -> dict[str, float]:
  """{name: sum / count} from summed (sum, count) pairs; a count of None means report the sum itself."""
  return {name: float(total) if count is None else float(total / max(count, 1e-9))
          for name, (total, count) in totals.items()}


def token_cross_entropy(logits_BLV, targets_BL, weights_BL, label_smoothing: float = 0.0) -> dict:
  """Summed next-token metrics as {name: (sum, count)}: the (label-smoothed) training loss, the plain
  negative log-likelihood and accuracy over the tokens with weight 1.

  Label smoothing spreads `label_smoothing` of the target mass uniformly over the vocabulary (Szegedy et
  al., 2016), as the Transformer's translation recipe does.
  """
  log_probs_BLV = jax.nn.log_softmax(logits_BLV.astype(jnp.float32), axis=-1)
  nll_BL = -jnp.take_along_axis(log_probs_BLV, targets_BL[..., None], axis=-1)[..., 0]
  loss_BL = nll_BL
  if label_smoothing > 0.0:
    loss_BL = (1.0 - label_smoothing) * nll_BL - label_smoothing * log_probs_BLV.mean(axis=-1)
  count = weights_BL.sum()
  correct = ((jnp.argmax(logits_BLV, axis=-1) == targets_BL) * weights_BL).sum()
  return {"loss": ((loss_BL * weights_BL).sum(), count), "nll": ((nll_BL * weights_BL).sum(), count),
          "accuracy": (correct, count), "num_targets": (count, None)}


def with_perplexity(values: dict[str, float]) -> dict[str, float]:
  """Adds perplexity = exp(mean negative log-likelihood per target token)."""
  if "nll" in values:
    values["perplexity"] = float(np.exp(min(values["nll"], 50.0)))
  return values


def decode(gen, step_fn, cache, prompt_BL, prompt_lengths_B, max_length: int, eos_id: int, pad_id: int, rng):
  """Tokens [B, max_length] from the search config.generate names (greedy, sample or beam)."""
  from flaxlm import search  # Late: only generation needs it.
  if gen.method == "beam":
    tokens_BT, _ = search.beam_search(step_fn, cache, prompt_BL, prompt_lengths_B, max_length,
                                      num_beams=gen.num_beams, eos_id=eos_id, pad_id=pad_id,
                                      length_penalty=gen.length_penalty)
    return tokens_BT
  tokens_BT, _ = search.generate(step_fn, cache, prompt_BL, prompt_lengths_B, max_length, eos_id=eos_id,
                                 pad_id=pad_id, method=gen.method, temperature=gen.temperature, top_k=gen.top_k,
                                 top_p=gen.top_p, rng=rng)
  return tokens_BT


def document_vocab_texts(config):
  """The training split's documents (at most tokenizer.train_max_documents of them), for a trained vocab."""
  docs = sources.text_source(config.data, config.data.train_split)
  return (docs[i] for i in range(min(len(docs), config.tokenizer.train_max_documents)))


def document_corpus_id(config) -> str:
  """Identifies document_vocab_texts for the vocab cache."""
  docs = sources.text_source(config.data, config.data.train_split)
  return f"{docs.identity}|{config.tokenizer.train_max_documents}"


def check_vocab_fits(model_config, tokenizer) -> None:
  """A generative model's output layer must cover every token id; larger is allowed (T5's checkpoints pad
  the embedding table past the tokenizer: 32128 rows for 32100 tokens)."""
  if model_config.vocab_size < tokenizer.vocab_size:
    raise ValueError(f"config.model.vocab_size={model_config.vocab_size} is smaller than the tokenizer's "
                     f"{tokenizer.vocab_size} tokens ({tokenizer.vocab_file})")


class SumsCollector:
  """Eval metrics that are sums and counts only: nothing to gather from the outputs."""

  def __init__(self, summarize):
    self._summarize = summarize

  def add(self, batch, outputs) -> None:
    del batch, outputs

  def result(self, totals: dict) -> dict[str, float]:
    return self._summarize(totals)


class Task:
  """Defaults for the task interface; a task module subclasses it.

  The loop calls: `dummy_batch`, `init_params`, `train_batches`, `prepare_batch` and `loss` (inside
  the jitted train step), `eval_sets`, `eval_step` (jitted) with `eval_collector` (on the host),
  `train_flops_per_row`, `best_metric`, `after_training`; `flaxlm.predict` calls `predict`.
  """

  name = "task"
  # (eval metric, "max" or "min") that picks the best checkpoint; None keeps no best checkpoint.
  best_metric: tuple[str, str] | None = None
  model = None
  seq_len = 0

  @classmethod
  def validate_config(cls, config, need) -> None:
    """Task-specific start-up checks: `need(ok, key, message)` fails naming config.KEY."""
    del config, need

  @classmethod
  def vocab_corpus_id(cls, config) -> str:
    """Identifies vocab_texts for the vocab cache (changes when the texts may have changed)."""
    files = [config.data.train_file] if config.data.train_file else []
    stamps = [f"{os.path.abspath(f)}:{os.path.getsize(f)}:{os.path.getmtime(f)}" for f in files if os.path.isfile(f)]
    return f"{cls.name}|{config.data.tfds_name}|{'|'.join(stamps)}"

  @classmethod
  def vocab_texts(cls, config):
    """Texts a WordPiece vocab is trained on when the run has neither a vocab file nor init_from."""
    raise NotImplementedError

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    """A batch of the right shapes and dtypes, for initialisation and compilation."""
    raise NotImplementedError

  def model_inputs(self, batch) -> tuple:
    """The encoder's inputs from a batch."""
    return batch["input_ids"], batch["segment_ids"], batch["positions"], batch["token_type_ids"]

  def init_params(self, rng, batch):
    """Fresh parameters (with logical-axis boxes) for a batch of these shapes."""
    return self.model.init(rng, *self.model_inputs(batch), deterministic=True)["params"]

  def prepare_batch(self, batch, rng, rows=None):
    """Per-step batch preparation inside the jitted step (MLM masks here); identity by default.

    `rows` = (offset, total): this batch is rows offset.. of a `total`-row batch (pmap), so random
    choices must be drawn for the whole batch and sliced.
    """
    del rng, rows
    return batch

  def eval_step(self, params, batch, rng):
    """(metric sums, per-batch outputs for the collector) for one eval batch; jitted by the loop."""
    _, _, metrics = self.loss(params, self.prepare_batch(batch, rng), rng, train=False)
    return metrics, {}

  def eval_collector(self, name: str):
    """Host-side accumulator for one eval set: `add(batch, outputs)`, then `result(totals)`."""
    del name
    return SumsCollector(self.summarize)

  def summarize(self, totals: dict) -> dict[str, float]:
    """Host-side metric values from summed (sum, count) pairs."""
    return ratios(totals)

  def tokens_per_row(self) -> int:
    """Token positions a training row holds (for perf/tokens_per_sec)."""
    return self.seq_len

  def after_training(self, params, log) -> None:
    """Called once with the final params on process 0."""
    del params, log

  @staticmethod
  def _padded_batch(examples, batch_size, seq_len) -> dict[str, np.ndarray]:
    return pipeline.pad_batch({k: np.stack([pipeline.pad_example(e, seq_len)[k] for e in examples])
                               for k in pipeline.pad_example(examples[0], seq_len)}, batch_size)


class ExampleTask(Task):
  """Fine-tuning on labelled examples, each encoded as a dict of per-token arrays.

  A subclass names its features, encodes examples (`encoded_examples`), computes
  `loss_and_logits`, and turns logits into eval outputs (`eval_outputs`).
  """

  int_features: tuple[str, ...] = ("input_ids", "token_type_ids")
  float_features: tuple[str, ...] = ()

  @property
  def packed(self) -> bool:
    """Whether short examples share rows (data.pack_examples)."""
    return self.config.data.pack_examples

  def encoded_examples(self, which: str) -> list[dict[str, np.ndarray]]:
    """'train', or an eval set name ('' is the primary one), encoded."""
    raise NotImplementedError

  def eval_set_names(self) -> list[str]:
    """Names of the eval sets; '' is reported without a prefix."""
    return [""]

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    shape = (batch_size, self.seq_len)
    batch = {name: np.zeros(shape, np.int32) for name in (*self.int_features, "segment_ids", "positions")}
    batch.update({name: np.zeros(shape, np.float32) for name in self.float_features})
    return batch

  def train_batches(self, batch_size: int, process_index: int, process_count: int):
    return pipeline.example_train_batches(
        self.encoded_examples("train"), max_seq_len=self.seq_len, batch_size=batch_size, seed=self.config.seed,
        packed=self.packed, packing_bins=self.config.data.packing_bins, process_index=process_index,
        process_count=process_count)

  def eval_sets(self, batch_size: int, process_index: int, process_count: int):
    return {name: pipeline.example_eval_batches(
        self.encoded_examples(name), max_seq_len=self.seq_len, batch_size=batch_size, packed=self.packed,
        packing_bins=self.config.data.packing_bins, process_index=process_index, process_count=process_count)
        for name in self.eval_set_names()}

  def loss_and_logits(self, params, batch, rng, train: bool):
    """(summed loss, its weight, metrics, logits)."""
    raise NotImplementedError

  def loss(self, params, batch, rng, train: bool):
    return self.loss_and_logits(params, batch, rng, train)[:3]

  def eval_outputs(self, logits) -> dict:
    """What the eval collector needs from a batch's logits."""
    raise NotImplementedError

  def eval_step(self, params, batch, rng):
    _, _, metrics, logits = self.loss_and_logits(params, batch, rng, train=False)
    return metrics, self.eval_outputs(logits)

  def apply(self, params, batch, train: bool = False, rng=None):
    """The model's logits for a batch."""
    return self.model.apply({"params": params}, *self.model_inputs(batch), deterministic=not train,
                            rngs={"dropout": rng} if rng is not None else None)
