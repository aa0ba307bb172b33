"""Output heads over the encoder: the gathered masked-LM head, the pooler, and BertForMaskedLM."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from flaxlm.models.encoder import BertEncoder
from flaxlm.models.layers import ModelConfig, dense, layer_norm


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

  The decoder is tied to the word embeddings and has its own output bias, as in BERT.
  """

  cfg: ModelConfig

  def setup(self):
    self.encoder = BertEncoder(self.cfg)
    self.mlm_transform = MlmTransform(self.cfg)
    self.mlm_bias = self.param("mlm_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                               (self.cfg.vocab_size,))

  def __call__(self, input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL, masked_positions_BP,
               deterministic: bool = True):
    x_BLD = self.encoder(input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL, deterministic)
    h_BPD = self.mlm_transform(gather_positions(x_BLD, masked_positions_BP))
    return self.encoder.embeddings.attend(h_BPD) + self.mlm_bias


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
