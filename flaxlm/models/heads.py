"""Output heads over the encoder: the gathered masked-LM head, the pooler, and BertForMaskedLM."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from flaxlm.models.encoder import BertEncoder
from flaxlm.models.layers import ModelConfig, dense_init, layer_norm


def gather_positions(x_BLD, positions_BP):
  """x at the given positions of each row: [B, L, D], [B, P] -> [B, P, D]."""
  return jnp.take_along_axis(x_BLD, positions_BP[:, :, None], axis=1)


class MlmTransform(nn.Module):
  """BERT's MLM head transform: dense D->D, GELU, LayerNorm (before the tied decoder)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BPD):
    cfg = self.cfg
    h_BPD = nn.Dense(cfg.hidden_size, dtype=cfg.compute_dtype, name="dense",
                     kernel_init=dense_init(cfg, ("embed", "mlp")),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))(x_BPD)
    h_BPD = nn.gelu(h_BPD, approximate=False)
    return layer_norm(cfg, "norm")(h_BPD)


class Pooler(nn.Module):
  """tanh(dense(hidden state of [CLS])): one vector per sequence, for sentence-level heads."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, cls_BD):
    cfg = self.cfg
    return nn.tanh(nn.Dense(cfg.hidden_size, dtype=cfg.compute_dtype, name="dense",
                            kernel_init=dense_init(cfg, ("embed", "mlp")),
                            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)))(cls_BD))


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
