"""Transformer building blocks: embeddings, multi-head attention, feed-forward, encoder and decoder blocks.

Shapes in names: B batch, L length (queries), S length (keys), D hidden, H heads, K head dim,
F feed-forward dim, V vocab. Parameters carry logical axis names that `flaxlm.parallel` maps to
mesh axes.

The same modules build BERT (the defaults), GPT-2 (pre-LN blocks under a causal mask), BART
(post-LN encoder-decoder) and T5 (pre-LN, RMS norm, no biases, relative position bias): each
difference is a ModelConfig switch, not a parallel class.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


ATTENTION_IMPLS = ("einsum", "xla", "cudnn")
# What a rematerialised block keeps for the backward pass (jax.checkpoint policies; None keeps nothing).
REMAT_POLICIES = {"none": None, "block": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}
NORM_TYPES = ("layer", "rms")
POSITION_EMBEDDINGS = ("learned", "relative", "none")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Transformer hyper-parameters; built from the `model` section of a run config. Defaults are BERT's."""

  vocab_size: int
  hidden_size: int = 256
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 1024
  max_position_embeddings: int = 512
  type_vocab_size: int = 2  # 0: no token-type embedding at all.
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  pre_layer_norm: bool = False
  dtype: str = "float32"
  tie_embeddings: bool = True  # False: the LM / masked-LM output layer is its own kernel, not the word embeddings.
  # "einsum": the softmax formula below, with attention dropout. "xla" / "cudnn": jax.nn.dot_product_attention
  # (cuDNN flash attention on GPU), which takes no attention dropout.
  attention_impl: str = "einsum"
  # Recompute each encoder block in the backward pass instead of keeping its activations: "none",
  # "block" (keep only the block's input) or "dots" (keep matmul outputs, recompute what lies between).
  remat: str = "none"
  embedding_norm: bool = True  # Norm after the embedding sum (BERT; BART's layernorm_embedding).
  norm_type: str = "layer"  # "layer" (LayerNorm) or "rms" (T5: x / rms(x) * scale, no bias, no mean).
  use_bias: bool = True  # Biases in the attention and feed-forward projections (T5 has none).
  # "learned" table, "relative" (T5's bucketed bias added to the attention scores) or "none".
  position_embedding: str = "learned"
  relative_buckets: int = 32
  relative_max_distance: int = 128
  activation: str = "gelu"  # "gelu" (exact erf), "gelu_tanh" (GPT-2's gelu_new) or "relu".
  gated_mlp: bool = False  # T5 v1.1: act(x W_0) * (x W_1), then W_o.
  scale_attention: bool = True  # Scores divided by sqrt(head_dim); T5 does not.
  embedding_scale: bool = False  # Word embeddings times sqrt(hidden_size) (BART's scale_embedding).
  num_decoder_layers: int = 0  # Encoder-decoder models; 0: num_layers.
  scale_tied_logits: bool = False  # T5: decoder output times hidden_size**-0.5 before the tied projection.
  output_bias: bool = False  # A bias on the LM logits (BART's final_logits_bias).
  attention_head_dim: int = 0  # K; 0: hidden_size // num_heads (T5's d_kv may differ).

  def __post_init__(self):
    for name, allowed in (("attention_impl", ATTENTION_IMPLS), ("remat", tuple(REMAT_POLICIES)),
                          ("norm_type", NORM_TYPES), ("position_embedding", POSITION_EMBEDDINGS),
                          ("activation", ACTIVATIONS)):
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name} {getattr(self, name)!r} is not one of {allowed}")

  @classmethod
  def from_config(cls, model_config, vocab_size: int) -> "ModelConfig":
    """Takes the run config's `model` section; vocab_size comes from the tokenizer when unset."""
    values = {f.name: model_config[f.name] for f in dataclasses.fields(cls) if f.name != "vocab_size"}
    return cls(vocab_size=model_config.vocab_size or vocab_size, **values)

  @property
  def head_dim(self) -> int:
    return self.attention_head_dim or self.hidden_size // self.num_heads

  @property
  def decoder_layers(self) -> int:
    return self.num_decoder_layers or self.num_layers

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)


@flax.struct.dataclass
class Decoding:
  """Generation with a key-value cache: one token per row at position `index` (an int32 scalar, the same
  for every row), the cache holding `max_length` positions (static)."""

  index: jax.Array
  max_length: int = flax.struct.field(pytree_node=False)


def dense_init(cfg: ModelConfig, axes: tuple):
  """BERT's initialiser (truncated normal, std initializer_range) with logical axis names."""
  return nn.with_logical_partitioning(nn.initializers.truncated_normal(cfg.initializer_range), axes)


def dense(cfg: ModelConfig, features: int, axes: tuple, name: str, use_bias: bool = True) -> nn.Dense:
  """A dense layer in the compute dtype whose kernel and bias carry logical axis names (in, out)."""
  return nn.Dense(features, use_bias=use_bias, dtype=cfg.compute_dtype, name=name, kernel_init=dense_init(cfg, axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


def layer_norm(cfg: ModelConfig, name: str) -> nn.Module:
  """The configured norm computed in float32 whatever the compute dtype: LayerNorm, or RMS norm (T5)."""
  scale_init = nn.with_logical_partitioning(nn.initializers.ones, ("embed",))
  if cfg.norm_type == "rms":
    return nn.RMSNorm(epsilon=cfg.layer_norm_eps, dtype=jnp.float32, name=name, scale_init=scale_init)
  return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=jnp.float32, name=name, scale_init=scale_init,
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


class Embeddings(nn.Module):
  """Word (+ position) (+ token-type) embeddings, then the optional norm and dropout.

  An encoder-decoder's decoder shares its encoder's word table: its Embeddings has `has_words=False`
  (and no token types) and is given the word vectors from the encoder's `embed_words`.
  """

  cfg: ModelConfig
  has_words: bool = True

  def setup(self):
    cfg = self.cfg
    if self.has_words:
      self.word = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=dense_init(cfg, ("vocab", "embed")),
                           name="word")
      if cfg.type_vocab_size > 0:
        self.token_type = nn.Embed(cfg.type_vocab_size, cfg.hidden_size,
                                   embedding_init=dense_init(cfg, (None, "embed")), name="token_type")
    if cfg.position_embedding == "learned":
      self.position = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size,
                               embedding_init=dense_init(cfg, (None, "embed")), name="position")
    if cfg.embedding_norm:
      self.norm = layer_norm(cfg, "norm")

  def embed_words(self, input_ids_BL):
    """Word vectors [B, L, D], times sqrt(D) under embedding_scale."""
    x_BLD = self.word(input_ids_BL)
    return x_BLD * self.cfg.hidden_size ** 0.5 if self.cfg.embedding_scale else x_BLD

  def __call__(self, input_ids_BL, positions_BL, token_type_ids_BL, deterministic: bool, words_BLD=None):
    """`token_type_ids_BL` None means type 0; `words_BLD` replaces the lookup when has_words is False."""
    cfg = self.cfg
    x_BLD = self.embed_words(input_ids_BL) if words_BLD is None else words_BLD
    if cfg.position_embedding == "learned":
      x_BLD = x_BLD + self.position(positions_BL)
    if self.has_words and cfg.type_vocab_size > 0:
      if token_type_ids_BL is None:
        token_type_ids_BL = jnp.zeros(x_BLD.shape[:2], jnp.int32)
      x_BLD = x_BLD + self.token_type(token_type_ids_BL)
    if cfg.embedding_norm:
      x_BLD = self.norm(x_BLD)
    if not deterministic and cfg.dropout_rate > 0.0:
      x_BLD = dropout(x_BLD, cfg.dropout_rate, self.make_rng("dropout"))
    return x_BLD.astype(cfg.compute_dtype)

  def attend(self, x_BPD):
    """Logits against the word embeddings: the tied output layer."""
    return self.word.attend(x_BPD.astype(jnp.float32))


@jax.custom_vjp
def gelu(x):
  """Exact (erf) GELU, as BERT; the backward pass recomputes its slope from x, so only x is kept for it."""
  return nn.gelu(x, approximate=False)


def _gelu_forward(x):
  return gelu(x), x


def _gelu_backward(x, dy):
  # d/dx [x Phi(x)] = Phi(x) + x phi(x), in float32 whatever the compute dtype.
  x32 = x.astype(jnp.float32)
  slope = 0.5 * (1.0 + jax.lax.erf(x32 * 0.5**0.5)) + x32 * jnp.exp(-0.5 * x32 * x32) * (2.0 * jnp.pi) ** -0.5
  return ((dy.astype(jnp.float32) * slope).astype(x.dtype),)


gelu.defvjp(_gelu_forward, _gelu_backward)


def activation(cfg: ModelConfig, x):
  """The feed-forward non-linearity cfg.activation names."""
  if cfg.activation == "gelu":
    return gelu(x)
  if cfg.activation == "gelu_tanh":
    return nn.gelu(x, approximate=True)
  return nn.relu(x)


def dropout(x, rate: float, rng):
  """Inverted dropout: zero each entry with probability `rate`, scale the rest by 1 / (1 - rate)."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def attention_mask(segment_ids_BL):
  """[B, 1, L, S] boolean: a query sees the keys of its own packed segment; 0 is padding."""
  same_BLS = segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]
  real_BLS = (segment_ids_BL[:, :, None] > 0) & (segment_ids_BL[:, None, :] > 0)
  return (same_BLS & real_BLS)[:, None, :, :]


def causal_mask(segment_ids_BL):
  """[B, 1, L, L] boolean: a query sees its own segment's keys at its position and before."""
  length = segment_ids_BL.shape[1]
  earlier_LS = jnp.arange(length)[:, None] >= jnp.arange(length)[None, :]
  return attention_mask(segment_ids_BL) & earlier_LS[None, None]


def cross_attention_mask(decoder_segment_ids_BL, encoder_segment_ids_BS):
  """[B, 1, L, S] boolean: a decoder token sees the encoder tokens of the same packed pair; 0 is padding."""
  same_BLS = decoder_segment_ids_BL[:, :, None] == encoder_segment_ids_BS[:, None, :]
  real_BLS = (decoder_segment_ids_BL[:, :, None] > 0) & (encoder_segment_ids_BS[:, None, :] > 0)
  return (same_BLS & real_BLS)[:, None, :, :]


def decoding_mask(decoding: Decoding):
  """[1, 1, 1, max_length] boolean: the token at `index` sees the cached positions 0..index."""
  return (jnp.arange(decoding.max_length) <= decoding.index)[None, None, None, :]


def dot_product_attention(q_BLHK, k_BSHK, v_BSHK, mask_B1LS, dropout_rng=None, dropout_rate=0.0, bias_BHLS=None,
                          scale=None):
  """softmax(Q K^T * scale + bias + mask) V, softmax in float32; scale defaults to 1 / sqrt(K).

  Masked scores get the most negative finite value (not -inf) so an all-padding row gives a
  finite, ignored output instead of NaN.
  """
  scale = q_BLHK.shape[-1] ** -0.5 if scale is None else scale
  if scale != 1.0:
    q_BLHK = q_BLHK * jnp.asarray(scale, q_BLHK.dtype)
  scores_BHLS = jnp.einsum("blhk,bshk->bhls", q_BLHK, k_BSHK).astype(jnp.float32)
  if bias_BHLS is not None:
    scores_BHLS = scores_BHLS + bias_BHLS
  scores_BHLS = jnp.where(mask_B1LS, scores_BHLS, jnp.finfo(jnp.float32).min)
  probs_BHLS = jax.nn.softmax(scores_BHLS, axis=-1)
  if dropout_rng is not None and dropout_rate > 0.0:
    probs_BHLS = dropout(probs_BHLS, dropout_rate, dropout_rng)
  return jnp.einsum("bhls,bshk->blhk", probs_BHLS.astype(v_BSHK.dtype), v_BSHK)


@functools.lru_cache(maxsize=None)
def _bucket_table(num_buckets: int, max_distance: int, bidirectional: bool) -> np.ndarray:
  """T5's bucket for every key-minus-query distance in [-max_distance, max_distance] (index + max_distance).

  Computed once on the host in float32, as T5 does, so boundary distances land in T5's buckets.
  """
  relative = np.arange(-max_distance, max_distance + 1)
  buckets = np.zeros_like(relative)
  if bidirectional:
    num_buckets //= 2
    buckets += (relative > 0) * num_buckets  # Keys after the query use the upper half.
    distance = np.abs(relative)
  else:
    distance = np.maximum(-relative, 0)  # Keys after the query all share bucket 0 (they are masked).
  max_exact = num_buckets // 2
  # Distances below max_exact take their own bucket; the floor of 1 only keeps log() finite for them.
  log_ratio = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
  large = max_exact + (log_ratio / np.float32(math.log(max_distance / max_exact))
                       * np.float32(num_buckets - max_exact)).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


def relative_position_buckets(relative_BLS, num_buckets: int, max_distance: int, bidirectional: bool):
  """T5's bucket of each key-minus-query distance: one per small distance, then logarithmic up to
  max_distance; farther distances share the last bucket (of their direction)."""
  table = jnp.asarray(_bucket_table(num_buckets, max_distance, bidirectional))
  return table[jnp.clip(relative_BLS, -max_distance, max_distance) + max_distance]


class RelativePositionBias(nn.Module):
  """T5's learned per-head bias for each bucketed key-minus-query distance: [B, H, L, S] float32.

  One table per stack, shared by all its layers; bidirectional in an encoder, causal in a decoder.
  """

  cfg: ModelConfig
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions_BL, key_positions_BS):
    cfg = self.cfg
    table_NH = self.param("embedding", dense_init(cfg, (None, "heads")), (cfg.relative_buckets, cfg.num_heads))
    relative_BLS = key_positions_BS[:, None, :] - query_positions_BL[:, :, None]
    buckets_BLS = relative_position_buckets(relative_BLS, cfg.relative_buckets, cfg.relative_max_distance,
                                            self.bidirectional)
    return jnp.take(table_NH, buckets_BLS, axis=0).transpose(0, 3, 1, 2).astype(jnp.float32)


class HeadsProjection(nn.Module):
  """x [B, L, D] -> [B, L, H, K] with kernel [D, H, K] (kept 3-D so each axis has its logical name)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD):
    cfg = self.cfg
    kernel_DHK = self.param("kernel", dense_init(cfg, ("embed", "heads", "kv")),
                            (cfg.hidden_size, cfg.num_heads, cfg.head_dim))
    dtype = cfg.compute_dtype
    y_BLHK = jnp.einsum("bld,dhk->blhk", x_BLD.astype(dtype), kernel_DHK.astype(dtype))
    if not cfg.use_bias:
      return y_BLHK
    bias_HK = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "kv")),
                         (cfg.num_heads, cfg.head_dim))
    return y_BLHK + bias_HK.astype(dtype)


class MultiHeadAttention(nn.Module):
  """Multi-head attention with separate Q, K, V projections (as BERT checkpoints store them).

  Self-attention, or with `cross=True` attention from x to `kv_BSD` (the encoder output). `bias_BHLS`
  is added to the scores (relative positions). Under `decoding`, x is one token per row and keys and
  values live in the "cache" collection: self-attention writes this token's at `decoding.index` of a
  [B, max_length, H, K] buffer (the call that creates the buffer leaves it zero); cross-attention stores
  the encoder's keys and values when given `kv_BSD` and reads them back on later steps.
  """

  cfg: ModelConfig
  cross: bool = False

  @nn.compact
  def __call__(self, x_BLD, mask_B1LS, deterministic: bool, kv_BSD=None, bias_BHLS=None, decoding=None):
    cfg = self.cfg
    q_BLHK = HeadsProjection(cfg, name="query")(x_BLD)
    key, value = HeadsProjection(cfg, name="key"), HeadsProjection(cfg, name="value")
    if decoding is None:
      source_BSD = kv_BSD if self.cross else x_BLD
      k_BSHK, v_BSHK = key(source_BSD), value(source_BSD)
    elif self.cross:
      if kv_BSD is not None:
        self.put_variable("cache", "cached_key", key(kv_BSD))
        self.put_variable("cache", "cached_value", value(kv_BSD))
      k_BSHK, v_BSHK = self.get_variable("cache", "cached_key"), self.get_variable("cache", "cached_value")
    else:
      ready = self.has_variable("cache", "cached_key")
      shape = (x_BLD.shape[0], decoding.max_length, cfg.num_heads, cfg.head_dim)
      cached_k = self.variable("cache", "cached_key", jnp.zeros, shape, cfg.compute_dtype)
      cached_v = self.variable("cache", "cached_value", jnp.zeros, shape, cfg.compute_dtype)
      if ready:
        cached_k.value = jax.lax.dynamic_update_slice_in_dim(cached_k.value, key(x_BLD), decoding.index, axis=1)
        cached_v.value = jax.lax.dynamic_update_slice_in_dim(cached_v.value, value(x_BLD), decoding.index, axis=1)
      k_BSHK, v_BSHK = cached_k.value, cached_v.value

    scale = None if cfg.scale_attention else 1.0
    use_dropout = not deterministic and cfg.attention_dropout_rate > 0.0
    if cfg.attention_impl == "einsum":
      dropout_rng = self.make_rng("dropout") if use_dropout else None
      out_BLHK = dot_product_attention(q_BLHK, k_BSHK, v_BSHK, mask_B1LS, dropout_rng, cfg.attention_dropout_rate,
                                       bias_BHLS=bias_BHLS, scale=scale)
    elif use_dropout:
      raise ValueError(f"attention_impl {cfg.attention_impl!r} has no attention dropout; set "
                       f"attention_dropout_rate to 0 (it is {cfg.attention_dropout_rate}) or use 'einsum'")
    else:
      bias = None if bias_BHLS is None else bias_BHLS.astype(q_BLHK.dtype)
      out_BLHK = jax.nn.dot_product_attention(q_BLHK, k_BSHK, v_BSHK, bias=bias, mask=mask_B1LS, scale=scale,
                                              implementation=cfg.attention_impl)
    kernel_HKD = self.param("out_kernel", dense_init(cfg, ("heads", "kv", "embed")),
                            (cfg.num_heads, cfg.head_dim, cfg.hidden_size))
    dtype = cfg.compute_dtype
    out_BLD = jnp.einsum("blhk,hkd->bld", out_BLHK, kernel_HKD.astype(dtype))
    if not cfg.use_bias:
      return out_BLD
    bias_D = self.param("out_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                        (cfg.hidden_size,))
    return out_BLD + bias_D.astype(dtype)



class FeedForward(nn.Module):
  """Dense D->F, activation, dense F->D; gated (T5 v1.1): act(x W_0) * (x W_1), then W_o."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD):
    cfg = self.cfg
    if cfg.gated_mlp:
      h_BLF = (activation(cfg, dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi_0", cfg.use_bias)(x_BLD))
               * dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi_1", cfg.use_bias)(x_BLD))
    else:
      h_BLF = activation(cfg, dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi", cfg.use_bias)(x_BLD))
    h_BLF = nn.with_logical_constraint(h_BLF, ("batch", "length", "mlp"))
    return dense(cfg, cfg.hidden_size, ("mlp", "embed"), "wo", cfg.use_bias)(h_BLF)


def _sublayer(block: nn.Module, x_BLD, fn, norm, deterministic: bool):
  """x + dropout(fn(x)), normalised where the config says: fn's input (pre-LN) or the sum (post-LN)."""
  cfg = block.cfg
  y_BLD = fn(norm(x_BLD).astype(cfg.compute_dtype)) if cfg.pre_layer_norm else fn(x_BLD)
  if not deterministic and cfg.dropout_rate > 0.0:
    y_BLD = dropout(y_BLD, cfg.dropout_rate, block.make_rng("dropout"))
  out_BLD = x_BLD + y_BLD if cfg.pre_layer_norm else norm(x_BLD + y_BLD)
  return out_BLD.astype(cfg.compute_dtype)


class EncoderBlock(nn.Module):
  """One Transformer layer, self-attention then feed-forward; post-LN (BERT) or pre-LN (residual stream
  left unnormalised). Bidirectional or causal as its mask says: GPT-2's blocks are these."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD, mask_B1LS, deterministic: bool, bias_BHLS=None, decoding=None):
    cfg = self.cfg
    attention = MultiHeadAttention(cfg, name="attention")
    attention_norm, mlp_norm = layer_norm(cfg, "attention_norm"), layer_norm(cfg, "mlp_norm")
    x_BLD = _sublayer(self, x_BLD, lambda h: attention(h, mask_B1LS, deterministic, None, bias_BHLS, decoding),
                      attention_norm, deterministic)
    x_BLD = _sublayer(self, x_BLD, FeedForward(cfg, name="mlp"), mlp_norm, deterministic)
    return nn.with_logical_constraint(x_BLD, ("batch", "length", None))


class DecoderBlock(nn.Module):
  """An encoder-decoder's decoder layer: causal self-attention, cross-attention to the encoder output,
  feed-forward; each a residual sublayer as in EncoderBlock. Under `decoding`, `enc_BSD` is only given
  on the call that fills the cross-attention cache."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD, self_mask_B1LL, enc_BSD, cross_mask_B1LS, deterministic: bool, self_bias_BHLL=None,
               decoding=None):
    cfg = self.cfg
    self_attention = MultiHeadAttention(cfg, name="self_attention")
    cross_attention = MultiHeadAttention(cfg, cross=True, name="cross_attention")
    x_BLD = _sublayer(self, x_BLD,
                      lambda h: self_attention(h, self_mask_B1LL, deterministic, None, self_bias_BHLL, decoding),
                      layer_norm(cfg, "self_attention_norm"), deterministic)
    x_BLD = _sublayer(self, x_BLD,
                      lambda h: cross_attention(h, cross_mask_B1LS, deterministic, enc_BSD, None, decoding),
                      layer_norm(cfg, "cross_attention_norm"), deterministic)
    x_BLD = _sublayer(self, x_BLD, FeedForward(cfg, name="mlp"), layer_norm(cfg, "mlp_norm"), deterministic)
    return nn.with_logical_constraint(x_BLD, ("batch", "length", None))
