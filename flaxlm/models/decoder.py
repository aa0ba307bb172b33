"""Generative models on the encoder's modules: a decoder-only LM (GPT-2 style) and an encoder-decoder LM
(T5 / BART style), each with a key-value cache for generation.

Rows are packed as for the encoder: segment ids (0 = padding) and positions restarting at 0 in each
segment. For generation, `causal_lm_decoder` and `encoder_decoder_decoder` return (cache, step_fn):

    step_fn(cache, tokens_B, index) -> (logits_BV, new_cache)

feeds `tokens_B` at position `index` (the same for every row; rows left-aligned, no padding inside)
and gives the next-token logits. Every cache leaf has the batch as its leading axis (self-attention
keys and values [B, max_length, H, K], cross-attention keys and values [B, S, H, K], encoder segment
ids [B, S]), so a search can reorder or repeat rows with jnp.take / jnp.repeat on axis 0.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxlm.models.encoder import BertEncoder
from flaxlm.models.heads import lm_head_kernel, lm_logits
from flaxlm.models.layers import (REMAT_POLICIES, DecoderBlock, Decoding, Embeddings, ModelConfig,
                                  RelativePositionBias, causal_mask, cross_attention_mask, decoding_mask, layer_norm)


def segment_positions(segment_ids_BL):
  """Each token's position inside its packed segment: [B, L] int32, restarting at 0 where the id changes."""
  index_BL = jnp.broadcast_to(jnp.arange(segment_ids_BL.shape[1], dtype=jnp.int32), segment_ids_BL.shape)
  starts_BL = jnp.concatenate([jnp.ones_like(segment_ids_BL[:, :1], bool),
                               segment_ids_BL[:, 1:] != segment_ids_BL[:, :-1]], axis=1)
  return index_BL - jax.lax.cummax(jnp.where(starts_BL, index_BL, 0), axis=1)


def _output_layers(module: nn.Module) -> None:
  """The untied `lm_head` and the `output_bias` a generative model has when its config asks for them."""
  cfg = module.cfg
  module.lm_head = None if cfg.tie_embeddings else lm_head_kernel(cfg)
  module.output_bias = None
  if cfg.output_bias:
    module.output_bias = module.param(
        "output_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)), (cfg.vocab_size,))


class CausalLM(nn.Module):
  """Decoder-only LM: the encoder stack under a causal mask, then the LM head; logits [B, L, V] float32.

  GPT-2 when pre_layer_norm: learned positions, pre-LN blocks, a final norm, tied output layer.
  """

  cfg: ModelConfig

  def setup(self):
    self.decoder = BertEncoder(self.cfg, causal=True)
    _output_layers(self)

  def _logits(self, x_BLD):
    return lm_logits(self.cfg, x_BLD, self.decoder.embeddings, self.lm_head, self.output_bias)

  def __call__(self, input_ids_BL, segment_ids_BL, positions_BL, deterministic: bool = True):
    return self._logits(self.decoder(input_ids_BL, segment_ids_BL, positions_BL, None, deterministic))

  def decode_step(self, tokens_B, index, max_length: int):
    """Next-token logits [B, V] after feeding `tokens_B` at `index`; reads and writes the "cache" collection."""
    decoding = Decoding(jnp.asarray(index, jnp.int32), max_length)
    ids_B1 = tokens_B[:, None]
    positions_B1 = jnp.broadcast_to(decoding.index, ids_B1.shape)
    return self._logits(self.decoder(ids_B1, None, positions_B1, None, True, decoding))[:, 0]


class Decoder(nn.Module):
  """An encoder-decoder's decoder stack: DecoderBlocks over word vectors from the shared table.

  Its embeddings add only what the decoder has of its own (BART: positions and their norm; T5:
  nothing). Cross-attention sees the encoder tokens of the same packed pair. Under `decoding`, the
  call given `enc_BSD` stores the encoder's keys, values and segment ids in the cache; later steps
  read them (one source per row: the token attends to all of its row's non-padding encoder tokens).
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, words_BLD, segment_ids_BL, positions_BL, enc_BSD, encoder_segment_ids_BS,
               deterministic: bool = True, decoding=None):
    cfg = self.cfg
    x_BLD = Embeddings(cfg, has_words=False, name="embeddings")(None, positions_BL, None, deterministic, words_BLD)
    if decoding is None:
      self_mask_B1LL = causal_mask(segment_ids_BL)
      cross_mask_B1LS = cross_attention_mask(segment_ids_BL, encoder_segment_ids_BS)
      key_positions_BS = positions_BL
    else:
      if encoder_segment_ids_BS is not None:
        self.put_variable("cache", "encoder_segment_ids", encoder_segment_ids_BS)
      encoder_segment_ids_BS = self.get_variable("cache", "encoder_segment_ids")
      self_mask_B1LL = decoding_mask(decoding)
      cross_mask_B1LS = (encoder_segment_ids_BS > 0)[:, None, None, :]
      key_positions_BS = jnp.arange(decoding.max_length)[None]
    bias_BHLL = None
    if cfg.position_embedding == "relative":
      bias_BHLL = RelativePositionBias(cfg, bidirectional=False, name="relative_bias")(positions_BL, key_positions_BS)
    block = DecoderBlock
    if cfg.remat != "none":
      # static_argnums counts self: `deterministic` is argument 5.
      block = nn.remat(DecoderBlock, policy=REMAT_POLICIES[cfg.remat], static_argnums=(5,))
    for i in range(cfg.decoder_layers):
      x_BLD = block(cfg, name=f"layer_{i}")(x_BLD, self_mask_B1LL, enc_BSD, cross_mask_B1LS, deterministic,
                                             bias_BHLL, decoding)
    if cfg.pre_layer_norm:
      x_BLD = layer_norm(cfg, "final_norm")(x_BLD).astype(cfg.compute_dtype)
    return x_BLD


class EncoderDecoderLM(nn.Module):
  """Encoder-decoder LM (T5 / BART): the BERT encoder stack, a Decoder, the LM head; logits [B, L, V] float32.

  One word table (`encoder/embeddings/word`) serves the encoder, the decoder and, when tied, the LM head.
  """

  cfg: ModelConfig

  def setup(self):
    self.encoder = BertEncoder(self.cfg)
    self.decoder = Decoder(self.cfg)
    _output_layers(self)

  def encode(self, encoder_ids_BS, encoder_segment_ids_BS, encoder_positions_BS, deterministic: bool = True):
    """Encoder hidden states [B, S, D]."""
    return self.encoder(encoder_ids_BS, encoder_segment_ids_BS, encoder_positions_BS, None, deterministic)

  def decode(self, enc_BSD, encoder_segment_ids_BS, decoder_ids_BL, decoder_segment_ids_BL, decoder_positions_BL,
             deterministic: bool = True):
    """Teacher-forced decoder logits [B, L, V] given the encoder output."""
    words_BLD = self.encoder.embeddings.embed_words(decoder_ids_BL)
    x_BLD = self.decoder(words_BLD, decoder_segment_ids_BL, decoder_positions_BL, enc_BSD, encoder_segment_ids_BS,
                         deterministic)
    return self._logits(x_BLD)

  def __call__(self, encoder_ids_BS, encoder_segment_ids_BS, encoder_positions_BS, decoder_ids_BL,
               decoder_segment_ids_BL, decoder_positions_BL, deterministic: bool = True):
    enc_BSD = self.encode(encoder_ids_BS, encoder_segment_ids_BS, encoder_positions_BS, deterministic)
    return self.decode(enc_BSD, encoder_segment_ids_BS, decoder_ids_BL, decoder_segment_ids_BL,
                       decoder_positions_BL, deterministic)

  def _logits(self, x_BLD):
    return lm_logits(self.cfg, x_BLD, self.encoder.embeddings, self.lm_head, self.output_bias)

  def start_decoding(self, encoder_ids_BS, encoder_segment_ids_BS, max_length: int):
    """Runs the encoder once and creates the decoder's cache (call with mutable=["cache"]): empty
    self-attention keys and values, the encoder's cross-attention keys and values, its segment ids."""
    positions_BS = segment_positions(encoder_segment_ids_BS)
    enc_BSD = self.encode(encoder_ids_BS, encoder_segment_ids_BS, positions_BS)
    # A step that writes nothing: a freshly created self-attention cache is left zero.
    self._step(jnp.zeros(encoder_ids_BS.shape[:1], jnp.int32), 0, max_length, enc_BSD, encoder_segment_ids_BS)

  def decode_step(self, tokens_B, index, max_length: int):
    """Next-token logits [B, V] after feeding `tokens_B` at `index`; reads and writes the "cache" collection."""
    return self._step(tokens_B, index, max_length)

  def _step(self, tokens_B, index, max_length, enc_BSD=None, encoder_segment_ids_BS=None):
    decoding = Decoding(jnp.asarray(index, jnp.int32), max_length)
    ids_B1 = tokens_B[:, None]
    positions_B1 = jnp.broadcast_to(decoding.index, ids_B1.shape)
    words_B1D = self.encoder.embeddings.embed_words(ids_B1)
    x_B1D = self.decoder(words_B1D, None, positions_B1, enc_BSD, encoder_segment_ids_BS, True, decoding)
    return self._logits(x_B1D)[:, 0]


def _check_length(cfg: ModelConfig, max_length: int) -> None:
  if cfg.position_embedding == "learned" and max_length > cfg.max_position_embeddings:
    raise ValueError(f"max_length {max_length} exceeds model.max_position_embeddings {cfg.max_position_embeddings}")


def _step_fn(model: nn.Module, params, max_length: int):
  """step_fn(cache, tokens_B, index) over `model.decode_step`, jitted with the params as an argument."""

  @jax.jit
  def step(params, cache, tokens_B, index):
    logits_BV, variables = model.apply({"params": params, "cache": cache}, tokens_B, index, max_length,
                                       method=model.decode_step, mutable=["cache"])
    return logits_BV, variables["cache"]

  def step_fn(cache, tokens_B, index):
    """(next-token logits [B, V] float32, new cache) after feeding tokens_B at position index."""
    return step(params, cache, tokens_B, index)

  return step_fn


def causal_lm_decoder(model: CausalLM, params, batch_size: int, max_length: int):
  """(cache, step_fn) to generate up to `max_length` tokens per row with a CausalLM; the cache starts empty."""
  _check_length(model.cfg, max_length)
  tokens_B = jnp.zeros((batch_size,), jnp.int32)
  shapes = jax.eval_shape(lambda p: model.apply({"params": p}, tokens_B, 0, max_length, method=model.decode_step,
                                                mutable=["cache"])[1]["cache"], params)
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return cache, _step_fn(model, params, max_length)


def encoder_decoder_decoder(model: EncoderDecoderLM, params, encoder_ids_BS, encoder_segment_ids_BS,
                            max_length: int):
  """(cache, step_fn) to generate up to `max_length` decoder tokens per source row (one source per row,
  left-aligned, segment id > 0 on its tokens); the encoder runs once, here."""
  _check_length(model.cfg, max_length)

  @jax.jit
  def start(params, encoder_ids_BS, encoder_segment_ids_BS):
    _, variables = model.apply({"params": params}, encoder_ids_BS, encoder_segment_ids_BS, max_length,
                               method=model.start_decoding, mutable=["cache"])
    return variables["cache"]

  cache = start(params, jnp.asarray(encoder_ids_BS, jnp.int32), jnp.asarray(encoder_segment_ids_BS, jnp.int32))
  return cache, _step_fn(model, params, max_length)
