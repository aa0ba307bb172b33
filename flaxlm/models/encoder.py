"""The Transformer stack over token ids: BERT's encoder, and (causal) a decoder-only LM's body.

Embeddings, a stack of encoder blocks, and a final norm under pre-LN. The same stack is the encoder
of an encoder-decoder model (flaxlm.models.decoder).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from flaxlm.models.layers import (REMAT_POLICIES, EncoderBlock, Embeddings, ModelConfig, RelativePositionBias,
                                  attention_mask, causal_mask, decoding_mask, layer_norm)


class BertEncoder(nn.Module):
  """Token ids -> contextual hidden states [B, L, D].

  `segment_ids` says which packed sequence each token belongs to (0 = padding); attention never
  crosses segments, and `positions` restart at 0 in each one. With `causal` a token also sees
  nothing after itself (GPT-2's stack). Under `decoding` (causal only) the input is one token per
  row at position `decoding.index` and the blocks keep their keys and values in the "cache" collection.
  """

  cfg: ModelConfig
  causal: bool = False

  def setup(self):
    cfg = self.cfg
    self.embeddings = Embeddings(cfg)
    block = EncoderBlock
    if cfg.remat != "none":
      # static_argnums counts self: `deterministic` (argument 3) picks the graph, it is not traced.
      block = nn.remat(EncoderBlock, policy=REMAT_POLICIES[cfg.remat], static_argnums=(3,))
    # The explicit names keep the parameter paths (layer_0, ...) whatever the wrapper.
    self.layers = [block(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
    if cfg.position_embedding == "relative":
      self.relative_bias = RelativePositionBias(cfg, bidirectional=not self.causal)
    if cfg.pre_layer_norm:
      self.final_norm = layer_norm(cfg, "final_norm")

  def __call__(self, input_ids_BL, segment_ids_BL, positions_BL, token_type_ids_BL=None, deterministic: bool = True,
               decoding=None):
    x_BLD = self.embeddings(input_ids_BL, positions_BL, token_type_ids_BL, deterministic)
    if decoding is not None:
      mask_B1LS = decoding_mask(decoding)
      key_positions_BS = jnp.arange(decoding.max_length)[None]
    else:
      mask_B1LS = causal_mask(segment_ids_BL) if self.causal else attention_mask(segment_ids_BL)
      key_positions_BS = positions_BL
    bias_BHLS = None
    if self.cfg.position_embedding == "relative":
      bias_BHLS = self.relative_bias(positions_BL, key_positions_BS)
    for layer in self.layers:
      x_BLD = layer(x_BLD, mask_B1LS, deterministic, bias_BHLS, decoding)
    if self.cfg.pre_layer_norm:
      x_BLD = self.final_norm(x_BLD).astype(self.cfg.compute_dtype)
    return x_BLD
