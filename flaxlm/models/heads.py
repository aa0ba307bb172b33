"""Output heads: the gathered masked-LM head, the pooler, BertFor* task models, and the LM output layer."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from flaxlm.models.encoder import BertEncoder
from flaxlm.models.layers import ModelConfig, dense, dense_init, layer_norm


def lm_head_kernel(cfg: ModelConfig) -> nn.Dense:
  """An untied LM output layer D -> V (`lm_head/kernel`, no bias), computed in float32."""
  return nn.Dense(cfg.vocab_size, use_bias=False, dtype=jnp.float32, name="lm_head",
                  kernel_init=dense_init(cfg, ("embed", "vocab")))


def lm_logits(cfg: ModelConfig, x_BLD, embeddings, lm_head=None, output_bias_V=None):
  """Next-token logits [B, L, V] in float32 from the final hidden states.

  Tied: against the word embeddings, after scaling x by hidden_size**-0.5 under scale_tied_logits
  (T5); untied: the model's own `lm_head`. Plus the output bias when the model has one (BART).
  """
  x_BLD = x_BLD.astype(jnp.float32)
  if cfg.tie_embeddings:
    if cfg.scale_tied_logits:
      x_BLD = x_BLD * cfg.hidden_size ** -0.5
    logits_BLV = embeddings.attend(x_BLD)
  else:
    logits_BLV = lm_head(x_BLD)
  return logits_BLV if output_bias_V is None else logits_BLV + output_bias_V


def gather_positions(x_BLD, positions_BP):
  """x at the given positions of each row: [B, L, D], [B, P] -> [B, P, D]."""
  return jnp.take_along_axis(x_BLD, positions_BP[:, :, None], axis=1)


class MlmTransform(nn.Module):
  """BERT's MLM head transform: dense D->D, GELU, LayerNorm (before the tied decoder)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BPD):
    h_BPD = dense(self.cfg, self.cfg.hidden_size, ("embed", "mlp"), "dense")(x_BPD)
    return layer_norm(self.cfg, "norm")(nn.gelu(h_BPD, approximate=False))


class Pooler(nn.Module):
  """tanh(dense(hidden state of [CLS])): one vector per sequence, for sentence-level heads."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, cls_BD):
    return nn.tanh(dense(self.cfg, self.cfg.hidden_size, ("embed", "mlp"), "dense")(cls_BD))


class BertForMaskedLM(nn.Module):
  """Encoder + MLM head evaluated only at `masked_positions` [B, P]: logits [B, P, V] in float32.

  The decoder is tied to the word embeddings (unless cfg.tie_embeddings is False: then it is its
  own `mlm_decoder` kernel) and has its own output bias, as in BERT. With `sentence_head` (NSP or
  SOP pretraining) a pooler and a 2-way `seq_relationship` classifier, BERT's next-sentence head,
  score every token and the call returns (MLM logits, sentence logits [B, L, 2]); the task reads
  them at each pair's [CLS], as the classification head does.
  """

  cfg: ModelConfig
  sentence_head: bool = False

  def setup(self):
    self.encoder = BertEncoder(self.cfg)
    self.mlm_transform = MlmTransform(self.cfg)
    self.mlm_bias = self.param("mlm_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                               (self.cfg.vocab_size,))
    if not self.cfg.tie_embeddings:
      self.mlm_decoder = nn.Dense(self.cfg.vocab_size, use_bias=False, dtype=jnp.float32, name="mlm_decoder",
                                  kernel_init=dense_init(self.cfg, ("embed", "vocab")))
    if self.sentence_head:
      self.pooler = Pooler(self.cfg)
      self.seq_relationship = dense(self.cfg, 2, ("embed", None), "seq_relationship")

  def __call__(self, input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL, masked_positions_BP,
               deterministic: bool = True):
    x_BLD = self.encoder(input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL, deterministic)
    h_BPD = self.mlm_transform(gather_positions(x_BLD, masked_positions_BP))
    if self.cfg.tie_embeddings:
      logits_BPV = self.encoder.embeddings.attend(h_BPD) + self.mlm_bias
    else:
      logits_BPV = self.mlm_decoder(h_BPD.astype(jnp.float32)) + self.mlm_bias
    if not self.sentence_head:
      return logits_BPV
    return logits_BPV, self.seq_relationship(self.pooler(x_BLD)).astype(jnp.float32)


class BertForSequenceClassification(nn.Module):
  """Encoder + pooler + linear classifier, scored at every token; the task reads the [CLS] tokens.

  Packed rows hold several examples, each starting with its own [CLS]; computing the small head at
  every position keeps shapes static, and the loss weights pick each example's [CLS]. With
  num_labels == 1 the output is a regression score.
  """

  cfg: ModelConfig
  num_labels: int

  def setup(self):
    self.encoder = BertEncoder(self.cfg)
    self.pooler = Pooler(self.cfg)
    self.classifier = dense(self.cfg, self.num_labels, ("embed", None), "classifier")
    self.dropout = nn.Dropout(self.cfg.dropout_rate)

  def __call__(self, input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL, deterministic: bool = True):
    x_BLD = self.encoder(input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL, deterministic)
    pooled_BLD = self.dropout(self.pooler(x_BLD), deterministic=deterministic)
    return self.classifier(pooled_BLD).astype(jnp.float32)


class BertForTokenClassification(nn.Module):
  """Encoder + dropout + linear classifier per token (NER)."""

  cfg: ModelConfig
  num_labels: int

  def setup(self):
    self.encoder = BertEncoder(self.cfg)
    self.classifier = dense(self.cfg, self.num_labels, ("embed", None), "classifier")
    self.dropout = nn.Dropout(self.cfg.dropout_rate)

  def __call__(self, input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL, deterministic: bool = True):
    x_BLD = self.encoder(input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL, deterministic)
    return self.classifier(self.dropout(x_BLD, deterministic=deterministic)).astype(jnp.float32)


class BertForQuestionAnswering(nn.Module):
  """Encoder + linear start/end scorer per token: logits [B, L, 2] (start, end)."""

  cfg: ModelConfig

  def setup(self):
    self.encoder = BertEncoder(self.cfg)
    self.qa_outputs = dense(self.cfg, 2, ("embed", None), "qa_outputs")

  def __call__(self, input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL, deterministic: bool = True):
    x_BLD = self.encoder(input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL, deterministic)
    return self.qa_outputs(x_BLD).astype(jnp.float32)
