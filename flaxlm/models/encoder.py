"""The BERT encoder: embeddings, a stack of encoder blocks, and a final LayerNorm under pre-LN."""

from __future__ import annotations

import flax.linen as nn

from flaxlm.models.layers import (REMAT_POLICIES, EncoderBlock, Embeddings, ModelConfig, attention_mask,
                                  layer_norm)


class BertEncoder(nn.Module):
  """Token ids -> contextual hidden states [B, L, D].

  `segment_ids` says which packed sequence each token belongs to (0 = padding); attention never
  crosses segments, and `positions` restart at 0 in each one.
  """

  cfg: ModelConfig

  def setup(self):
    self.embeddings = Embeddings(self.cfg)
    block = EncoderBlock
    if self.cfg.remat != "none":
      # static_argnums counts self: `deterministic` (argument 3) picks the graph, it is not traced.
      block = nn.remat(EncoderBlock, policy=REMAT_POLICIES[self.cfg.remat], static_argnums=(3,))
    # The explicit names keep the parameter paths (layer_0, ...) whatever the wrapper.
    self.layers = [block(self.cfg, name=f"layer_{i}") for i in range(self.cfg.num_layers)]
    if self.cfg.pre_layer_norm:
      self.final_norm = layer_norm(self.cfg, "final_norm")

  def __call__(self, input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL, deterministic: bool = True):
    x_BLD = self.embeddings(input_ids_BL, positions_BL, token_type_ids_BL, deterministic)
    mask_B1LS = attention_mask(segment_ids_BL)
    for layer in self.layers:
      x_BLD = layer(x_BLD, mask_B1LS, deterministic)
    if self.cfg.pre_layer_norm:
      x_BLD = self.final_norm(x_BLD).astype(self.cfg.compute_dtype)
    return x_BLD
