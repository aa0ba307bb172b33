"""Masked-LM pretraining: corrupt in the step, predict only the masked positions, cross-entropy.

With `mlm.sentence_objective` nsp or sop, rows hold labelled sentence pairs and the loss adds the
pooled 2-way sentence loss (mean over pairs) to the MLM loss (mean over masked tokens), as BERT.

The training loop sees only the Task interface (see `flaxlm.tasks`): batches, a loss that returns
sums and counts, and what to do after training (here: fill-in-the-blank examples).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm.data import pipeline, sources
from flaxlm.data.tokenizer import Tokenizer
from flaxlm.models import BertForMaskedLM, ModelConfig
from flaxlm.tasks.base import Task, document_corpus_id, document_vocab_texts, ratios
from flaxlm.tasks.masking import MaskingConfig, mask_tokens
from flaxlm.train import flops


def max_predictions(config) -> int:
  """Masked slots per row: the configured number, else ceil(mask_rate * max_seq_len)."""
  return config.mlm.max_predictions_per_seq or math.ceil(config.mlm.mask_rate * config.data.max_seq_len)


class MlmTask(Task):
  """BERT masked-LM pretraining on packed rows."""

  name = "mlm"

  def __init__(self, config, tokenizer: Tokenizer):
    self.config = config
    self.tokenizer = tokenizer
    self.model_config = ModelConfig.from_config(config.model, tokenizer.vocab_size)
    if self.model_config.vocab_size != tokenizer.vocab_size:
      raise ValueError(f"config.model.vocab_size={self.model_config.vocab_size} does not match the tokenizer's "
                       f"{tokenizer.vocab_size} tokens ({tokenizer.vocab_file})")
    self.sentence_objective = config.mlm.sentence_objective
    self.model = BertForMaskedLM(self.model_config, sentence_head=self.sentence_objective != "none")
    self.seq_len = config.data.max_seq_len
    self.masking = MaskingConfig(
        mask_id=tokenizer.mask_id,
        special_ids=tuple(int(i) for i in np.flatnonzero(tokenizer.special_table())),
        vocab_size=tokenizer.vocab_size,
        max_predictions=max_predictions(config),
        mask_rate=config.mlm.mask_rate,
        mask_token_prob=config.mlm.mask_token_prob,
        random_token_prob=config.mlm.random_token_prob,
        whole_word=config.mlm.whole_word)

  # ---------------------------------------------------------------- data

  @classmethod
  def vocab_texts(cls, config):
    """The training split's documents (at most tokenizer.train_max_documents of them)."""
    return document_vocab_texts(config)

  @classmethod
  def vocab_corpus_id(cls, config) -> str:
    """Identifies vocab_texts for the vocab cache."""
    return document_corpus_id(config)

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    """A batch of the right shapes and dtypes, for initialisation and compilation."""
    return {name: np.zeros((batch_size, self.seq_len), np.int32) for name in pipeline.features(self.sentence_objective)}

  def train_batches(self, batch_size: int, process_index: int, process_count: int):
    """This process's endless, checkpointable stream of training batches."""
    return pipeline.train_batches(
        sources.text_source(self.config.data, self.config.data.train_split), self.tokenizer,
        max_seq_len=self.seq_len, batch_size=batch_size, seed=self.config.seed,
        packing_bins=self.config.data.packing_bins, process_index=process_index, process_count=process_count,
        sentence_objective=self.sentence_objective)

  def eval_sets(self, batch_size: int, process_index: int, process_count: int):
    """{"": one pass over this process's share of the eval split, the last batch padded}."""
    return {"": pipeline.eval_batches(
        sources.text_source(self.config.data, self.config.data.eval_split), self.tokenizer,
        max_seq_len=self.seq_len, batch_size=batch_size, packing_bins=self.config.data.packing_bins,
        process_index=process_index, process_count=process_count, sentence_objective=self.sentence_objective)}

  # ---------------------------------------------------------------- model

  def model_inputs(self, batch) -> tuple:
    """Encoder inputs plus the masked positions the head is evaluated at."""
    positions_BP = batch.get("masked_positions")
    if positions_BP is None:
      positions_BP = jnp.zeros((batch["input_ids"].shape[0], self.masking.max_predictions), jnp.int32)
    return (*super().model_inputs(batch), positions_BP)

  def prepare_batch(self, batch, rng, rows=None):
    """Masks the batch (in the jitted step, before any split into accumulation micro-batches)."""
    input_ids_BL, positions_BP, targets_BP, weights_BP = mask_tokens(
        rng, batch["input_ids"], batch["segment_ids"], batch["word_start"], self.masking, rows)
    return {**batch, "input_ids": input_ids_BL, "masked_positions": positions_BP, "targets": targets_BP,
            "weights": weights_BP}

  def loss(self, params, batch, rng, train: bool):
    """(summed loss, number of predictions, metrics as {name: (sum, count)}) for a prepared batch."""
    logits_BPV = self.model.apply({"params": params}, *self.model_inputs(batch), deterministic=not train,
                                  rngs={"dropout": rng})
    sentence_logits_BL2 = None
    if self.sentence_objective != "none":
      logits_BPV, sentence_logits_BL2 = logits_BPV
    targets_BP, weights_BP = batch["targets"], batch["weights"]
    log_probs_BPV = jax.nn.log_softmax(logits_BPV.astype(jnp.float32), axis=-1)
    nll_BP = -jnp.take_along_axis(log_probs_BPV, targets_BP[..., None], axis=-1)[..., 0]
    num_predictions = weights_BP.sum()
    loss_sum = (nll_BP * weights_BP).sum()
    correct = ((jnp.argmax(logits_BPV, axis=-1) == targets_BP) * weights_BP).sum()
    metrics = {"loss": (loss_sum, num_predictions), "mlm_accuracy": (correct, num_predictions)}
    if sentence_logits_BL2 is not None:
      loss_sum = self._add_sentence_loss(sentence_logits_BL2, batch["sentence_labels"], metrics)
    if not train:
      # Totals over the eval split (count None): what was evaluated, so nothing is silently dropped.
      metrics["num_sequences"] = (jnp.max(batch["segment_ids"], axis=1).sum().astype(jnp.float32), None)
      metrics["num_tokens"] = ((batch["segment_ids"] > 0).sum().astype(jnp.float32), None)
      metrics["num_predictions"] = (num_predictions, None)
      # How often the eval split's most frequent target token is the answer: the accuracy of a
      # model that always predicts it, the floor a trained model must clear.
      counts_V = jnp.zeros(self.model_config.vocab_size).at[targets_BP.reshape(-1)].add(weights_BP.reshape(-1))
      metrics["target_counts"] = (counts_V, None)
    return loss_sum, num_predictions, metrics

  @staticmethod
  def _add_sentence_loss(logits_BL2, labels_BL, metrics) -> jnp.ndarray:
    """Adds the sentence metrics; returns the summed loss whose mean over predictions is MLM + sentence.

    The one loss the loop divides by the number of predictions is MLM sum + sentence sum x
    (predictions / pairs), so it equals the sum of the two means for the batch (for each
    micro-batch under gradient accumulation).
    """
    mlm_sum, num_predictions = metrics["loss"]
    weights_BL = (labels_BL > 0).astype(jnp.float32)
    targets_BL = jnp.maximum(labels_BL - 1, 0)
    log_probs_BL2 = jax.nn.log_softmax(logits_BL2, axis=-1)
    sentence_sum = -(jnp.take_along_axis(log_probs_BL2, targets_BL[..., None], axis=-1)[..., 0] * weights_BL).sum()
    num_pairs = weights_BL.sum()
    correct = ((jnp.argmax(logits_BL2, axis=-1) == targets_BL) * weights_BL).sum()
    metrics["mlm_loss"] = (mlm_sum, num_predictions)
    metrics["sentence_loss"] = (sentence_sum, num_pairs)
    metrics["sentence_accuracy"] = (correct, num_pairs)
    total = mlm_sum + sentence_sum * num_predictions / jnp.maximum(num_pairs, 1.0)
    metrics["loss"] = (total, num_predictions)
    return total

  def summarize(self, totals: dict) -> dict[str, float]:
    """Host-side metric values; the eval target histogram becomes the majority-token accuracy."""
    totals = dict(totals)
    counts = totals.pop("target_counts", None)
    out = ratios(totals)
    if "sentence_loss" in out:  # Over several batches the exact sum of the two means.
      out["loss"] = out["mlm_loss"] + out["sentence_loss"]
    if counts is not None:
      out["majority_token_accuracy"] = float(counts[0].max() / max(counts[0].sum(), 1.0))
    return out

  def train_flops_per_row(self) -> float:
    """Analytic training FLOPs per row, for perf/mfu."""
    per_row = flops.mlm_train_flops_per_row(self.model_config, self.seq_len, self.masking.max_predictions)
    if self.sentence_objective != "none":  # Pooler D->D and classifier D->2 at every token, x3 for backward.
      per_row += 3.0 * self.seq_len * 2 * self.model_config.hidden_size * (self.model_config.hidden_size + 2)
    return per_row

  # ---------------------------------------------------------------- after training

  def fill_mask(self, params, texts: list[str], top_k: int = 5):
    """For each text with [MASK] tokens: per mask, the top_k (token, probability), specials excluded."""
    rows, mask_positions = [], []
    for text in texts:
      ids = [self.tokenizer.cls_id, *self.tokenizer.encode(text)[: self.seq_len - 2], self.tokenizer.sep_id]
      positions = [i for i, t in enumerate(ids) if t == self.tokenizer.mask_id]
      if not positions:
        raise ValueError(f"no [MASK] token in {text!r}")
      rows.append(ids)
      mask_positions.append(positions[: self.masking.max_predictions])
    B, L, P = len(rows), self.seq_len, self.masking.max_predictions
    input_ids, segment_ids, positions_BL = (np.zeros((B, L), np.int32) for _ in range(3))
    masked_BP = np.zeros((B, P), np.int32)
    for b, (ids, pos) in enumerate(zip(rows, mask_positions)):
      input_ids[b, : len(ids)] = ids
      segment_ids[b, : len(ids)] = 1
      positions_BL[b, : len(ids)] = np.arange(len(ids))
      masked_BP[b, : len(pos)] = pos
    logits_BPV = self.model.apply({"params": params}, input_ids, segment_ids, positions_BL,
                                  np.zeros_like(input_ids), masked_BP, deterministic=True)
    if self.sentence_objective != "none":
      logits_BPV = logits_BPV[0]
    logits_BPV = np.where(self.tokenizer.special_table(), -np.inf, np.asarray(logits_BPV, np.float64))
    probs_BPV = np.exp(logits_BPV - logits_BPV.max(-1, keepdims=True))
    probs_BPV /= probs_BPV.sum(-1, keepdims=True)
    results = []
    for b, pos in enumerate(mask_positions):
      per_mask = []
      for p in range(len(pos)):
        best = np.argsort(-probs_BPV[b, p])[:top_k]
        per_mask.append([(self.tokenizer.vocab[i], float(probs_BPV[b, p, i])) for i in best])
      results.append(per_mask)
    return results

  def predict(self, params, texts: list[str], pairs=None, top_k: int = 5) -> list[str]:
    """Printable fill-in-the-blank results: each text, then the top_k candidates of each [MASK]."""
    del pairs
    lines = []
    for text, per_mask in zip(texts, self.fill_mask(params, texts, top_k)):
      lines.append(text)
      for i, candidates in enumerate(per_mask):
        shown = "  ".join(f"{token} {prob:.3f}" for token, prob in candidates)
        lines.append(f"  [MASK] #{i + 1}: {shown}")
    return lines

  def after_training(self, params, log) -> None:
    """Prints the configured fill-in-the-blank examples with the trained model."""
    examples = list(self.config.task.fill_mask_examples)
    if examples:
      log("Fill in the blank (top 5 with probabilities):")
      for line in self.predict(params, examples):
        log("  " + line)
