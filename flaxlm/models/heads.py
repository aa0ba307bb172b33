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
