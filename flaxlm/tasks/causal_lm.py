"""Causal (GPT-style) language modelling: predict each token from the ones before it in its document.

Documents are tokenized whole (bos ... eos), cut into chunks of data.max_seq_len and packed; the
loss is next-token cross-entropy inside each chunk (a chunk never predicts across its boundary), and
evaluation reports perplexity. After training the task continues config.generate.prompts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm.data import pipeline, sources
from flaxlm.data.tokenizer import Tokenizer
from flaxlm.models import CausalLM, ModelConfig
from flaxlm.models.decoder import causal_lm_decoder
from flaxlm.tasks import base
from flaxlm.train import flops

FEATURES = ("input_ids", "segment_ids", "positions")


def next_token_targets(input_ids_BL, segment_ids_BL):
  """(targets, weights): each token's successor, weighted 1 where it lies in the same packed segment."""
  targets_BL = jnp.concatenate([input_ids_BL[:, 1:], jnp.zeros_like(input_ids_BL[:, :1])], axis=1)
  next_segment_BL = jnp.concatenate([segment_ids_BL[:, 1:], jnp.zeros_like(segment_ids_BL[:, :1])], axis=1)
  weights_BL = ((segment_ids_BL > 0) & (next_segment_BL == segment_ids_BL)).astype(jnp.float32)
  return targets_BL, weights_BL


class CausalLmTask(base.Task):
  """Next-token prediction on packed document chunks."""

  name = "causal_lm"
  best_metric = ("nll", "min")

  def __init__(self, config, tokenizer: Tokenizer):
    self.config = config
    self.tokenizer = tokenizer
    tokenizer.require(("cls", "sep"), "causal language modelling (bos and eos around each document)")
    self.model_config = ModelConfig.from_config(config.model, tokenizer.vocab_size)
    base.check_vocab_fits(self.model_config, tokenizer)
    self.model = CausalLM(self.model_config)
    self.seq_len = config.data.max_seq_len

  @classmethod
  def vocab_texts(cls, config):
    """The training split's documents (at most tokenizer.train_max_documents of them)."""
    return base.document_vocab_texts(config)

  @classmethod
  def vocab_corpus_id(cls, config) -> str:
    """Identifies vocab_texts for the vocab cache."""
    return base.document_corpus_id(config)

  # ---------------------------------------------------------------- data

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    """A batch of the right shapes and dtypes, for initialisation and compilation."""
    return {name: np.zeros((batch_size, self.seq_len), np.int32) for name in FEATURES}

  def _batches(self, split: str, batch_size: int, process_index: int, process_count: int, train: bool):
    chunks = pipeline.DocumentToChunks(self.tokenizer, self.seq_len, lambda ids, rng: {"input_ids": ids},
                                       self.config.seed, process_index)
    return pipeline.document_batches(
        sources.text_source(self.config.data, split), chunks, {"input_ids": self.seq_len}, _as_features,
        batch_size=batch_size, seed=self.config.seed, packing_bins=self.config.data.packing_bins, train=train,
        process_index=process_index, process_count=process_count)

  def train_batches(self, batch_size: int, process_index: int, process_count: int):
    """This process's endless, checkpointable stream of packed chunks."""
    return self._batches(self.config.data.train_split, batch_size, process_index, process_count, train=True)

  def eval_sets(self, batch_size: int, process_index: int, process_count: int):
    """{"": one pass over this process's share of the eval split}."""
    return {"": self._batches(self.config.data.eval_split, batch_size, process_index, process_count, train=False)}

  # ---------------------------------------------------------------- model

  def model_inputs(self, batch) -> tuple:
    """The decoder's inputs: token ids, packed segment ids, positions."""
    return batch["input_ids"], batch["segment_ids"], batch["positions"]

  def loss(self, params, batch, rng, train: bool):
    """(summed loss, number of predicted tokens, metrics) for a batch of packed chunks."""
    logits_BLV = self.model.apply({"params": params}, *self.model_inputs(batch), deterministic=not train,
                                  rngs={"dropout": rng})
    targets_BL, weights_BL = next_token_targets(batch["input_ids"], batch["segment_ids"])
    metrics = base.token_cross_entropy(logits_BLV, targets_BL, weights_BL)
    return metrics["loss"][0], metrics["loss"][1], metrics

  def summarize(self, totals: dict) -> dict[str, float]:
    """Host-side metric values, with perplexity."""
    return base.with_perplexity(base.ratios(totals))

  def train_flops_per_row(self) -> float:
    """Analytic training FLOPs per row (blocks and the LM head at every token, x3 for the backward)."""
    cfg = self.model_config
    per_token = flops.encoder_forward_flops_per_token(cfg, self.seq_len) + 2 * cfg.hidden_size * cfg.vocab_size
    return 3.0 * self.seq_len * per_token

  # ---------------------------------------------------------------- generation

  def generate(self, params, prompts: list[str], gen, seed: int = 0) -> list[str]:
    """Continuations of `prompts` (text after each prompt) with the search `gen` describes."""
    encoded = [[self.tokenizer.bos_id, *self.tokenizer.encode(p)] for p in prompts]
    longest = max(len(e) for e in encoded)
    max_length = longest + gen.max_new_tokens
    if self.model_config.position_embedding == "learned" and max_length > self.model_config.max_position_embeddings:
      raise ValueError(f"prompt ({longest} tokens) + generate.max_new_tokens ({gen.max_new_tokens}) exceeds "
                       f"model.max_position_embeddings {self.model_config.max_position_embeddings}")
    prompt_BL = np.full((len(prompts), longest), self.tokenizer.pad_id, np.int32)
    for b, ids in enumerate(encoded):
      prompt_BL[b, : len(ids)] = ids
    lengths_B = np.array([len(e) for e in encoded], np.int32)
    cache, step_fn = causal_lm_decoder(self.model, params, len(prompts), max_length)
    tokens_BT = base.decode(gen, step_fn, cache, prompt_BL, lengths_B, max_length, self.tokenizer.eos_id,
                            self.tokenizer.pad_id, jax.random.PRNGKey(seed))
    out = []
    for b, tokens in enumerate(np.asarray(tokens_BT)):
      # Rows share one max_length (the longest prompt's); each keeps its own max_new_tokens.
      new = [int(t) for t in tokens[lengths_B[b]:lengths_B[b] + gen.max_new_tokens]]
      if self.tokenizer.eos_id in new:
        new = new[: new.index(self.tokenizer.eos_id)]
      out.append(self.tokenizer.decode(new))
    return out

  def predict(self, params, texts: list[str], pairs=None, top_k: int = 5) -> list[str]:
    """Printable continuations of `texts` with the run's generate settings."""
    del pairs, top_k
    lines = []
    for prompt, text in zip(texts, self.generate(params, texts, self.config.generate)):
      lines += [f"{prompt!r} ->", *("  " + line for line in (prompt + text).split("\n"))]
    return lines

  def after_training(self, params, log) -> None:
    """Prints continuations of config.generate.prompts."""
    prompts = list(self.config.generate.prompts)
    if prompts:
      log(f"Samples ({self.config.generate.method}):")
      for line in self.predict(params, prompts):
        log("  " + line)


def _as_features(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """grain's packing outputs -> the task's batch features."""
  return {"input_ids": batch["input_ids"], "segment_ids": batch["input_ids_segment_ids"].astype(np.int32),
          "positions": batch["input_ids_positions"].astype(np.int32)}

