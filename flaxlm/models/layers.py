"""Transformer building blocks: embeddings, multi-head attention, feed-forward, encoder block.

Shapes in names: B batch, L length (queries), S length (keys), D hidden, H heads, K head dim,
F feed-forward dim, V vocab. Parameters carry logical axis names that `flaxlm.parallel` maps to
mesh axes.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp


ATTENTION_IMPLS = ("einsum", "xla", "cudnn")
# What a rematerialised block keeps for the backward pass (jax.checkpoint policies; None keeps nothing).
REMAT_POLICIES = {"none": None, "block": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Encoder hyper-parameters; built from the `model` section of a run config."""

  vocab_size: int
  hidden_size: int = 256
  num_layers: int = 4
  num_heads: int = 4
  mlp_dim: int = 1024
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  pre_layer_norm: bool = False
  dtype: str = "float32"
  tie_embeddings: bool = True  # False: the masked-LM decoder is its own kernel, not the word embeddings.
  # "einsum": the softmax formula below, with attention dropout. "xla" / "cudnn": jax.nn.dot_product_attention
  # (cuDNN flash attention on GPU), which takes no attention dropout.
  attention_impl: str = "einsum"
  # Recompute each encoder block in the backward pass instead of keeping its activations: "none",
  # "block" (keep only the block's input) or "dots" (keep matmul outputs, recompute what lies between).
  remat: str = "none"

  def __post_init__(self):
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention_impl {self.attention_impl!r} is not one of {ATTENTION_IMPLS}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat {self.remat!r} is not one of {tuple(REMAT_POLICIES)}")

  @classmethod
  def from_config(cls, model_config, vocab_size: int) -> "ModelConfig":
    """Takes the run config's `model` section; vocab_size comes from the tokenizer when unset."""
    values = {f.name: model_config[f.name] for f in dataclasses.fields(cls) if f.name != "vocab_size"}
    return cls(vocab_size=model_config.vocab_size or vocab_size, **values)

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)


def dense_init(cfg: ModelConfig, axes: tuple):
  """BERT's initialiser (truncated normal, std initializer_range) with logical axis names."""
  return nn.with_logical_partitioning(nn.initializers.truncated_normal(cfg.initializer_range), axes)


def dense(cfg: ModelConfig, features: int, axes: tuple, name: str) -> nn.Dense:
  """A dense layer in the compute dtype whose kernel and bias carry logical axis names (in, out)."""
  return nn.Dense(features, dtype=cfg.compute_dtype, name=name, kernel_init=dense_init(cfg, axes),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


def layer_norm(cfg: ModelConfig, name: str) -> nn.LayerNorm:
  """LayerNorm computed in float32 whatever the compute dtype, as BERT's eps."""
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=jnp.float32, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


class Embeddings(nn.Module):
  """Token + position + token-type embeddings, then LayerNorm and dropout."""

  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.word = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=dense_init(cfg, ("vocab", "embed")),
                         name="word")
    self.position = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size,
                             embedding_init=dense_init(cfg, (None, "embed")), name="position")
    self.token_type = nn.Embed(cfg.type_vocab_size, cfg.hidden_size,
                               embedding_init=dense_init(cfg, (None, "embed")), name="token_type")
    self.norm = layer_norm(cfg, "norm")

  def __call__(self, input_ids_BL, positions_BL, token_type_ids_BL, deterministic: bool):
    x_BLD = self.word(input_ids_BL) + self.position(positions_BL) + self.token_type(token_type_ids_BL)
    x_BLD = self.norm(x_BLD)
    if not deterministic and self.cfg.dropout_rate > 0.0:
      x_BLD = dropout(x_BLD, self.cfg.dropout_rate, self.make_rng("dropout"))
    return x_BLD.astype(self.cfg.compute_dtype)

  def attend(self, x_BPD):
    """Logits against the word embeddings: the tied MLM decoder."""
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


def dropout(x, rate: float, rng):
  """Inverted dropout: zero each entry with probability `rate`, scale the rest by 1 / (1 - rate)."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def attention_mask(segment_ids_BL):
  """[B, 1, L, S] boolean: a query sees the keys of its own packed segment; 0 is padding."""
  same_BLS = segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]
  real_BLS = (segment_ids_BL[:, :, None] > 0) & (segment_ids_BL[:, None, :] > 0)
  return (same_BLS & real_BLS)[:, None, :, :]


def dot_product_attention(q_BLHK, k_BSHK, v_BSHK, mask_B1LS, dropout_rng=None, dropout_rate=0.0):
  """softmax(Q K^T / sqrt(K) + mask) V, softmax in float32.

  Masked scores get the most negative finite value (not -inf) so an all-padding row gives a
  finite, ignored output instead of NaN.
  """
  scale = q_BLHK.shape[-1] ** -0.5
  scores_BHLS = jnp.einsum("blhk,bshk->bhls", q_BLHK * jnp.asarray(scale, q_BLHK.dtype), k_BSHK)
  scores_BHLS = scores_BHLS.astype(jnp.float32)
  scores_BHLS = jnp.where(mask_B1LS, scores_BHLS, jnp.finfo(jnp.float32).min)
  probs_BHLS = jax.nn.softmax(scores_BHLS, axis=-1)
  if dropout_rng is not None and dropout_rate > 0.0:
    probs_BHLS = dropout(probs_BHLS, dropout_rate, dropout_rng)
  return jnp.einsum("bhls,bshk->blhk", probs_BHLS.astype(v_BSHK.dtype), v_BSHK)


class HeadsProjection(nn.Module):
  """x [B, L, D] -> [B, L, H, K] with kernel [D, H, K] (kept 3-D so each axis has its logical name)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD):
    cfg = self.cfg
    kernel_DHK = self.param("kernel", dense_init(cfg, ("embed", "heads", "kv")),
                            (cfg.hidden_size, cfg.num_heads, cfg.head_dim))
    bias_HK = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("heads", "kv")),
                         (cfg.num_heads, cfg.head_dim))
    dtype = cfg.compute_dtype
    return jnp.einsum("bld,dhk->blhk", x_BLD.astype(dtype), kernel_DHK.astype(dtype)) + bias_HK.astype(dtype)


class SelfAttention(nn.Module):
  """Multi-head self-attention with separate Q, K, V projections (as BERT checkpoints store them)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD, mask_B1LS, deterministic: bool):
    cfg = self.cfg
    q_BLHK = HeadsProjection(cfg, name="query")(x_BLD)
    k_BLHK = HeadsProjection(cfg, name="key")(x_BLD)
    v_BLHK = HeadsProjection(cfg, name="value")(x_BLD)
    use_dropout = not deterministic and cfg.attention_dropout_rate > 0.0
    if cfg.attention_impl == "einsum":
      dropout_rng = self.make_rng("dropout") if use_dropout else None
      out_BLHK = dot_product_attention(q_BLHK, k_BLHK, v_BLHK, mask_B1LS, dropout_rng, cfg.attention_dropout_rate)
    elif use_dropout:
      raise ValueError(f"attention_impl {cfg.attention_impl!r} has no attention dropout; set "
                       f"attention_dropout_rate to 0 (it is {cfg.attention_dropout_rate}) or use 'einsum'")
    else:
      out_BLHK = jax.nn.dot_product_attention(q_BLHK, k_BLHK, v_BLHK, mask=mask_B1LS,
                                              implementation=cfg.attention_impl)
    kernel_HKD = self.param("out_kernel", dense_init(cfg, ("heads", "kv", "embed")),
                            (cfg.num_heads, cfg.head_dim, cfg.hidden_size))
    bias_D = self.param("out_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                        (cfg.hidden_size,))
    dtype = cfg.compute_dtype
    return jnp.einsum("blhk,hkd->bld", out_BLHK, kernel_HKD.astype(dtype)) + bias_D.astype(dtype)


class FeedForward(nn.Module):
  """Dense D->F, exact (erf) GELU as in BERT, dense F->D."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD):
    cfg = self.cfg
    h_BLF = gelu(dense(cfg, cfg.mlp_dim, ("embed", "mlp"), "wi")(x_BLD))
    h_BLF = nn.with_logical_constraint(h_BLF, ("batch", "length", "mlp"))
    return dense(cfg, cfg.hidden_size, ("mlp", "embed"), "wo")(h_BLF)


class EncoderBlock(nn.Module):
  """One Transformer layer; post-LN (BERT) or pre-LN (residual stream left unnormalised)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BLD, mask_B1LS, deterministic: bool):
    cfg = self.cfg
    attention = SelfAttention(cfg, name="attention")
    mlp = FeedForward(cfg, name="mlp")
    attention_norm, mlp_norm = layer_norm(cfg, "attention_norm"), layer_norm(cfg, "mlp_norm")

    def residual(x, y, norm):
      if not deterministic and cfg.dropout_rate > 0.0:
        y = dropout(y, cfg.dropout_rate, self.make_rng("dropout"))
      out = norm(x + y) if not cfg.pre_layer_norm else x + y
      return out.astype(cfg.compute_dtype)

    if cfg.pre_layer_norm:
      x_BLD = residual(x_BLD, attention(attention_norm(x_BLD).astype(cfg.compute_dtype), mask_B1LS,
                                        deterministic), None)
      x_BLD = residual(x_BLD, mlp(mlp_norm(x_BLD).astype(cfg.compute_dtype)), None)
    else:
      x_BLD = residual(x_BLD, attention(x_BLD, mask_B1LS, deterministic), attention_norm)
      x_BLD = residual(x_BLD, mlp(x_BLD), mlp_norm)
    return nn.with_logical_constraint(x_BLD, ("batch", "length", None))
