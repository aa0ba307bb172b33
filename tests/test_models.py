"""The encoder and MLM head against an independent NumPy implementation of BERT's formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm.models import BertForMaskedLM, ModelConfig, attention_mask, dot_product_attention

_erf = np.vectorize(math.erf)


def np_layer_norm(x, scale, bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def np_gelu(x):
  return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_attention(x, p, num_heads):
  """One sequence [L, D], no padding: softmax(Q K^T / sqrt(d)) V per head, then the output dense."""
  q = np.einsum("ld,dhk->hlk", x, p["query"]["kernel"]) + p["query"]["bias"][:, None, :]
  k = np.einsum("ld,dhk->hlk", x, p["key"]["kernel"]) + p["key"]["bias"][:, None, :]
  v = np.einsum("ld,dhk->hlk", x, p["value"]["kernel"]) + p["value"]["bias"][:, None, :]
  probs = np_softmax(q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1]))
  heads = probs @ v  # [H, L, K]
  return np.einsum("hlk,hkd->ld", heads, p["out_kernel"]) + p["out_bias"]


def np_encoder(ids, p, cfg: ModelConfig):
  """BERT encoder on one unpadded sequence, float64, written from the paper's equations."""
  e = p["embeddings"]
  x = e["word"]["embedding"][ids] + e["position"]["embedding"][np.arange(len(ids))] + e["token_type"]["embedding"][0]
  x = np_layer_norm(x, e["norm"]["scale"], e["norm"]["bias"], cfg.layer_norm_eps)
  for i in range(cfg.num_layers):
    lp = p[f"layer_{i}"]
    an, mn = lp["attention_norm"], lp["mlp_norm"]

    def mlp(h):
      return np_gelu(h @ lp["mlp"]["wi"]["kernel"] + lp["mlp"]["wi"]["bias"]) @ lp["mlp"]["wo"]["kernel"] + \
          lp["mlp"]["wo"]["bias"]

    if cfg.pre_layer_norm:
      x = x + np_attention(np_layer_norm(x, an["scale"], an["bias"], cfg.layer_norm_eps), lp["attention"],
                           cfg.num_heads)
      x = x + mlp(np_layer_norm(x, mn["scale"], mn["bias"], cfg.layer_norm_eps))
    else:
      x = np_layer_norm(x + np_attention(x, lp["attention"], cfg.num_heads), an["scale"], an["bias"],
                        cfg.layer_norm_eps)
      x = np_layer_norm(x + mlp(x), mn["scale"], mn["bias"], cfg.layer_norm_eps)
  if cfg.pre_layer_norm:
    x = np_layer_norm(x, p["final_norm"]["scale"], p["final_norm"]["bias"], cfg.layer_norm_eps)
  return x


def np_mlm_logits(hidden, p, cfg):
  t = p["mlm_transform"]
  h = np_gelu(hidden @ t["dense"]["kernel"] + t["dense"]["bias"])
  h = np_layer_norm(h, t["norm"]["scale"], t["norm"]["bias"], cfg.layer_norm_eps)
  return h @ p["encoder"]["embeddings"]["word"]["embedding"].T + p["mlm_bias"]


def _init(cfg, B=2, L=12, P=3, seed=0):
  model = BertForMaskedLM(cfg)
  z = jnp.zeros((B, L), jnp.int32)
  params = model.init(jax.random.PRNGKey(seed), z, z + 1, z, z, jnp.zeros((B, P), jnp.int32))["params"]
  params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, params,
                        is_leaf=lambda x: hasattr(x, "value"))
  # Random (not zero) biases and LayerNorm gains so every term of the formula is exercised.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  leaves = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return model, jax.tree.unflatten(tree, leaves)


def test_attention_matches_numpy_formula():
  rng = np.random.default_rng(0)
  B, L, H, K = 2, 5, 3, 4
  q, k, v = (rng.normal(size=(B, L, H, K)).astype(np.float32) for _ in range(3))
  segment_ids = np.array([[1, 1, 1, 0, 0], [1, 1, 2, 2, 2]])
  out = np.asarray(dot_product_attention(q, k, v, attention_mask(jnp.asarray(segment_ids))))
  for b in range(B):
    for h in range(H):
      for i in range(L):
        if segment_ids[b, i] == 0:
          continue
        keys = segment_ids[b] == segment_ids[b, i]
        scores = q[b, i, h] @ k[b, keys, h].T / math.sqrt(K)
        expected = np_softmax(scores) @ v[b, keys, h]
        np.testing.assert_allclose(out[b, i, h], expected, rtol=1e-5, atol=1e-5)


def test_all_padding_row_is_finite():
  q = jnp.ones((1, 4, 2, 4))
  out = dot_product_attention(q, q, q, attention_mask(jnp.zeros((1, 4), jnp.int32)))
  assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("pre_layer_norm", [False, True])
def test_encoder_and_mlm_head_match_numpy(pre_layer_norm):
  cfg = ModelConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=4, mlp_dim=24,
                    max_position_embeddings=32, dropout_rate=0.0, attention_dropout_rate=0.0,
                    pre_layer_norm=pre_layer_norm)
  model, params = _init(cfg)
  rng = np.random.default_rng(1)
  ids = rng.integers(5, 50, size=(1, 12)).astype(np.int32)
  seg = np.ones_like(ids)
  pos = np.arange(12, dtype=np.int32)[None]
  masked = np.array([[0, 4, 11]], np.int32)
  logits = model.apply({"params": params}, ids, seg, pos, np.zeros_like(ids), masked)
  p64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  hidden = np_encoder(ids[0], p64["encoder"], cfg)
  expected = np_mlm_logits(hidden[masked[0]], p64, cfg)
  np.testing.assert_allclose(np.asarray(logits[0]), expected, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("attention_impl", ["einsum", "xla"])
def test_packed_row_equals_each_sequence_alone_and_padding_is_invisible(attention_impl):
  """Two sequences packed in one row (segments 1, 2, positions restarting) plus padding give the
  same hidden states as each sequence encoded alone by the NumPy reference."""
  cfg = ModelConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32,
                    max_position_embeddings=32, dropout_rate=0.0, attention_dropout_rate=0.0,
                    attention_impl=attention_impl)
  model, params = _init(cfg, L=16)
  a, b = [3, 7, 9, 11, 4], [5, 6, 8, 10, 12, 13, 2]
  L = 16
  ids = np.zeros((1, L), np.int32)
  seg = np.zeros((1, L), np.int32)
  pos = np.zeros((1, L), np.int32)
  ids[0, :5], seg[0, :5], pos[0, :5] = a, 1, np.arange(5)
  ids[0, 5:12], seg[0, 5:12], pos[0, 5:12] = b, 2, np.arange(7)
  ids[0, 12:] = 17  # Garbage in padding must not leak into real tokens.
  hidden = model.apply({"params": params}, ids, seg, pos, np.zeros_like(ids), np.zeros((1, 1), np.int32),
                       method=lambda m, *args: m.encoder(*args[:4]))
  assert np.isfinite(np.asarray(hidden)).all()  # Padding rows too: they attend to nothing.
  p64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)["encoder"]
  np.testing.assert_allclose(np.asarray(hidden[0, :5]), np_encoder(np.array(a), p64, cfg), rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(np.asarray(hidden[0, 5:12]), np_encoder(np.array(b), p64, cfg), rtol=2e-4, atol=2e-4)


def test_extra_padding_does_not_change_real_tokens():
  cfg = ModelConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32,
                    max_position_embeddings=64, dropout_rate=0.0, attention_dropout_rate=0.0)
  model, params = _init(cfg, L=8)
  ids = np.array([[2, 9, 14, 3, 21, 3]], np.int32)

  def encode(length):
    pad = length - ids.shape[1]
    x = np.pad(ids, ((0, 0), (0, pad)))
    seg = np.pad(np.ones_like(ids), ((0, 0), (0, pad)))
    pos = np.pad(np.arange(6, dtype=np.int32)[None], ((0, 0), (0, pad)))
    return model.apply({"params": params}, x, seg, pos, np.zeros_like(x), np.zeros((1, 1), np.int32),
                       method=lambda m, *args: m.encoder(*args[:4]))[0, :6]

  np.testing.assert_allclose(np.asarray(encode(6)), np.asarray(encode(40)), rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32():
  base = dict(vocab_size=40, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, max_position_embeddings=32,
              dropout_rate=0.0, attention_dropout_rate=0.0)
  model32, params = _init(ModelConfig(**base), L=8)
  model16 = BertForMaskedLM(ModelConfig(**base, dtype="bfloat16"))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  ids = np.array([[2, 5, 9, 13, 3, 0, 0, 0]], np.int32)
  seg = (ids > 0).astype(np.int32)
  pos = np.arange(8, dtype=np.int32)[None]
  masked = np.array([[1, 2]], np.int32)
  out32 = model32.apply({"params": params}, ids, seg, pos, np.zeros_like(ids), masked)
  out16 = model16.apply({"params": params}, ids, seg, pos, np.zeros_like(ids), masked)
  assert out16.dtype == jnp.float32  # Logits always come back in float32 for the loss.
  np.testing.assert_allclose(np.asarray(out16), np.asarray(out32), atol=0.1)


def test_parameters_carry_logical_axis_names():
  cfg = ModelConfig(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)
  z = jnp.zeros((1, 4), jnp.int32)
  boxed = BertForMaskedLM(cfg).init(jax.random.PRNGKey(0), z, z + 1, z, z, jnp.zeros((1, 1), jnp.int32))["params"]
  names = {"/".join(str(getattr(k, "key", k)) for k in path): box.names
           for path, box in jax.tree_util.tree_flatten_with_path(boxed, is_leaf=lambda x: hasattr(x, "names"))[0]}
  assert names["encoder/embeddings/word/embedding"] == ("vocab", "embed")
  assert names["encoder/layer_0/attention/query/kernel"] == ("embed", "heads", "kv")
  assert names["encoder/layer_0/attention/out_kernel"] == ("heads", "kv", "embed")
  assert names["encoder/layer_0/mlp/wi/kernel"] == ("embed", "mlp")
  assert names["mlm_bias"] == ("vocab",)
  assert all(len(n) > 0 for n in names.values())


def test_pooler_is_tanh_of_dense():
  from flaxlm.models import Pooler
  cfg = ModelConfig(vocab_size=10, hidden_size=8)
  x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
  params = Pooler(cfg).init(jax.random.PRNGKey(0), x)["params"]
  params = jax.tree.map(lambda b: b.value, params, is_leaf=lambda b: hasattr(b, "value"))
  params = {"dense": {"kernel": params["dense"]["kernel"], "bias": params["dense"]["bias"] + 0.3}}
  out = Pooler(cfg).apply({"params": params}, x)
  expected = np.tanh(x @ np.asarray(params["dense"]["kernel"]) + np.asarray(params["dense"]["bias"]))
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention_impl,remat", [("einsum", "none"), ("xla", "none"), ("einsum", "block"),
                                                  ("einsum", "dots"), ("xla", "dots")])
def test_attention_and_remat_options_match_numpy_values_and_gradients(attention_impl, remat):
  """Logits against the float64 reference, and the gradient along a random direction against the
  reference's central difference: rematerialisation and jax.nn.dot_product_attention change no math."""
  cfg = ModelConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=4, mlp_dim=24,
                    max_position_embeddings=32, dropout_rate=0.0, attention_dropout_rate=0.0,
                    attention_impl=attention_impl, remat=remat)
  model, params = _init(cfg)
  rng = np.random.default_rng(2)
  ids = rng.integers(5, 50, size=(1, 12)).astype(np.int32)
  pos = np.arange(12, dtype=np.int32)[None]
  masked = np.array([[1, 6, 10]], np.int32)
  readout = rng.normal(size=(3, 50))

  def loss(p):
    logits = model.apply({"params": p}, ids, np.ones_like(ids), pos, np.zeros_like(ids), masked)
    return (logits[0] * readout).sum()

  def np_loss(p64):
    return (np_mlm_logits(np_encoder(ids[0], p64["encoder"], cfg)[masked[0]], p64, cfg) * readout).sum()

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  p64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  assert float(value) == pytest.approx(np_loss(p64), rel=1e-4, abs=1e-3)
  leaves, tree = jax.tree.flatten(p64)
  direction = [rng.normal(size=x.shape) for x in leaves]
  eps = 1e-6
  shifted = [np_loss(jax.tree.unflatten(tree, [x + sign * eps * d for x, d in zip(leaves, direction)]))
             for sign in (1.0, -1.0)]
  finite_difference = (shifted[0] - shifted[1]) / (2 * eps)
  analytic = sum(float((np.asarray(g, np.float64) * d).sum()) for g, d in zip(jax.tree.leaves(grads), direction))
  assert analytic == pytest.approx(finite_difference, rel=2e-3)


def test_gelu_backward_matches_finite_differences_of_the_erf_formula():
  """The hand-written GELU derivative (kept for memory: only x is saved) against float64 central differences."""
  from flaxlm.models.layers import gelu
  x = np.linspace(-6.0, 6.0, 241)
  h = 1e-5
  numeric = (np_gelu(x + h) - np_gelu(x - h)) / (2 * h)
  ours = jax.vmap(jax.grad(gelu))(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(ours), numeric, atol=2e-6)
  np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x, jnp.float32))), np_gelu(x), atol=2e-6)


def test_remat_keeps_parameter_names_and_replays_dropout():
  base = dict(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, max_position_embeddings=32)
  model, params = _init(ModelConfig(**base))
  remat_model, remat_params = _init(ModelConfig(**base, remat="block"))
  # flaxlm.convert and saved checkpoints address parameters by path: the wrapper must not show.
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(remat_params)
  ids = np.array([[2, 9, 14, 3, 21, 3, 0, 0]], np.int32)
  seg, pos = (ids > 0).astype(np.int32), np.arange(8, dtype=np.int32)[None]

  def grads(m):
    def loss(p):
      logits = m.apply({"params": p}, ids, seg, pos, np.zeros_like(ids), np.array([[1, 4]], np.int32),
                       deterministic=False, rngs={"dropout": jax.random.PRNGKey(7)})
      return logits.sum()
    return jax.jit(jax.grad(loss))(params)

  # Dropout masks drawn in the recomputed forward pass are the ones of the first pass.
  for a, b in zip(jax.tree.leaves(grads(model)), jax.tree.leaves(grads(remat_model))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_unknown_options_and_dropout_with_jax_attention_are_refused():
  with pytest.raises(ValueError, match="attention_impl 'flash'"):
    ModelConfig(vocab_size=10, attention_impl="flash")
  with pytest.raises(ValueError, match="remat 'all'"):
    ModelConfig(vocab_size=10, remat="all")
  from flaxlm import config as config_lib
  c = config_lib.base_config()
  c.model.attention_impl = "xla"
  with pytest.raises(config_lib.ConfigError, match="model.attention_dropout_rate"):
    config_lib.validate(c)
  c.model.attention_dropout_rate = 0.0
  config_lib.validate(c)
