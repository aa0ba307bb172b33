"""CausalLM and EncoderDecoderLM: causality, packing, the key-value cache, T5's relative position buckets.

The numbers of the generative models against Hugging Face PyTorch are in test_convert_generative.py;
here the references are properties that must hold exactly (a logit never depends on a later token
or another segment; a cached step equals the full forward pass) and hand-worked T5 buckets.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm.models import (CausalLM, EncoderDecoderLM, ModelConfig, causal_lm_decoder, encoder_decoder_decoder,
                           segment_positions)
from flaxlm.models.layers import Embeddings, relative_position_buckets

V = 40
# One encoder layer, two decoder layers (caches and the relative bias are per stack and per layer).
SMALL = dict(vocab_size=V, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=24, max_position_embeddings=24,
             dropout_rate=0.0, attention_dropout_rate=0.0)
# GPT-2 style: learned positions, pre-LN with a final norm, tanh GELU, tied output layer.
GPT = ModelConfig(**SMALL, pre_layer_norm=True, embedding_norm=False, type_vocab_size=0, activation="gelu_tanh",
                  layer_norm_eps=1e-5)
# BART style: post-LN, embedding norm, scaled embeddings, output bias.
BART = ModelConfig(**SMALL, type_vocab_size=0, embedding_scale=True, output_bias=True, num_decoder_layers=2,
                   layer_norm_eps=1e-5)
# T5 v1.1 style: pre-LN RMS norm, no biases, relative bias (small buckets, so long distances are exercised),
# gated tanh-GELU, unscaled scores, untied output layer, head dim != hidden / heads.
T5 = ModelConfig(**SMALL, pre_layer_norm=True, norm_type="rms", use_bias=False, position_embedding="relative",
                 relative_buckets=8, relative_max_distance=6, activation="gelu_tanh", gated_mlp=True,
                 scale_attention=False, embedding_norm=False, type_vocab_size=0, tie_embeddings=False,
                 attention_head_dim=6, layer_norm_eps=1e-6, num_decoder_layers=2)


def unbox(tree):
  return jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, tree, is_leaf=lambda x: hasattr(x, "value"))


def random_params(model, *args, seed=0):
  """Initialised params with every leaf shifted randomly (biases and norm gains too)."""
  params = unbox(model.init(jax.random.PRNGKey(seed), *args)["params"])
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def one_segment(ids):
  """(segment ids, positions) of unpacked left-aligned rows (0 ids count as real tokens here)."""
  ids = np.asarray(ids)
  return np.ones_like(ids), np.broadcast_to(np.arange(ids.shape[1], dtype=np.int32), ids.shape).copy()


@functools.lru_cache(maxsize=None)  # Configs are frozen dataclasses: each model is initialised once per run.
def causal_params(cfg, seed=0):
  model = CausalLM(cfg)
  z = jnp.zeros((1, 4), jnp.int32)
  return model, random_params(model, z, z + 1, z, seed=seed)


@functools.lru_cache(maxsize=None)
def seq2seq_params(cfg, seed=0):
  model = EncoderDecoderLM(cfg)
  z = jnp.zeros((1, 4), jnp.int32)
  return model, random_params(model, z, z + 1, z, z, z + 1, z, seed=seed)


def adding_to_embeddings(delta_BLD, has_words: bool):
  """An interceptor that adds delta to the output of the (encoder: has_words, decoder: not) Embeddings."""
  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if isinstance(module, Embeddings) and context.method_name == "__call__" and module.has_words == has_words:
      return out + delta_BLD.astype(out.dtype)
    return out
  return nn.intercept_methods(interceptor)


# ----------------------------------------------------------------------------- causality and packing


@pytest.mark.parametrize("cfg", [GPT, dataclasses.replace(T5, num_layers=2)], ids=["gpt", "t5-relative"])
def test_causal_lm_never_looks_ahead(cfg):
  model, params = causal_params(cfg)
  apply = jax.jit(model.apply)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, V, size=(2, 10)).astype(np.int32)
  seg, pos = one_segment(ids)
  logits = np.asarray(apply({"params": params}, ids, seg, pos))
  for t in (0, 4, 8):
    changed = ids.copy()
    changed[:, t + 1:] = (changed[:, t + 1:] + 7) % V
    other = np.asarray(apply({"params": params}, changed, seg, pos))
    np.testing.assert_array_equal(other[:, :t + 1], logits[:, :t + 1])
    assert np.abs(other[:, t + 1:] - logits[:, t + 1:]).max() > 1e-3  # The change is visible where it may be.

  # d (random readout of row 0's logits at t) / d embedded input: exactly zero after t and in the other
  # row, non-zero at t and before.
  t, readout = 4, jnp.asarray(rng.normal(size=V))
  def score(delta_BLD):
    with adding_to_embeddings(delta_BLD, has_words=True):
      return model.apply({"params": params}, ids, seg, pos)[0, t] @ readout
  grad = np.asarray(jax.jit(jax.grad(score))(jnp.zeros((2, 10, cfg.hidden_size))))  # [B, L, D]
  assert np.all(grad[0, t + 1:] == 0.0) and np.all(grad[1] == 0.0)
  assert np.all(np.abs(grad[0, :t + 1]).sum(-1) > 0)


@pytest.mark.parametrize("cfg", [BART, T5], ids=["bart", "t5"])
def test_encoder_decoder_decoder_never_looks_ahead_and_sees_the_whole_source(cfg):
  model, params = seq2seq_params(cfg)
  apply = jax.jit(model.apply)
  rng = np.random.default_rng(1)
  src = rng.integers(0, V, size=(2, 7)).astype(np.int32)
  tgt = rng.integers(0, V, size=(2, 9)).astype(np.int32)
  args = (src, *one_segment(src), tgt, *one_segment(tgt))
  logits = np.asarray(apply({"params": params}, *args))
  t = 3
  changed = tgt.copy()
  changed[:, t + 1:] = (changed[:, t + 1:] + 5) % V
  other = np.asarray(apply({"params": params}, *args[:3], changed, *args[4:]))
  np.testing.assert_array_equal(other[:, :t + 1], logits[:, :t + 1])

  readout = jnp.asarray(rng.normal(size=V))
  def score(delta_dec, delta_enc):
    with adding_to_embeddings(delta_dec, has_words=False), adding_to_embeddings(delta_enc, has_words=True):
      return model.apply({"params": params}, *args)[0, t] @ readout
  d_dec, d_enc = jax.jit(jax.grad(score, argnums=(0, 1)))(jnp.zeros((2, 9, cfg.hidden_size)),
                                                          jnp.zeros((2, 7, cfg.hidden_size)))
  d_dec, d_enc = np.asarray(d_dec), np.asarray(d_enc)  # [B, L, D], [B, S, D]
  assert np.all(d_dec[0, t + 1:] == 0.0) and np.all(d_dec[1] == 0.0) and np.all(d_enc[1] == 0.0)
  assert np.all(np.abs(d_dec[0, :t + 1]).sum(-1) > 0)
  assert np.all(np.abs(d_enc[0]).sum(-1) > 0)  # Every source token, the last ones too.


def test_segment_positions_restart_in_each_segment():
  seg = np.array([[1, 1, 1, 2, 2, 0, 0], [1, 2, 3, 3, 3, 3, 0]], np.int32)
  np.testing.assert_array_equal(np.asarray(segment_positions(jnp.asarray(seg))),
                                [[0, 1, 2, 0, 1, 0, 1], [0, 0, 0, 1, 2, 3, 0]])


def _pack(sequences, length, fill=3):
  """One row holding the sequences as segments 1, 2, ... (positions restarting), garbage ids in the padding."""
  ids, seg, pos = np.full((1, length), fill, np.int32), np.zeros((1, length), np.int32), np.zeros((1, length), np.int32)
  start = 0
  for i, s in enumerate(sequences):
    ids[0, start:start + len(s)], seg[0, start:start + len(s)] = s, i + 1
    pos[0, start:start + len(s)] = np.arange(len(s))
    start += len(s)
  return ids, seg, pos


@pytest.mark.parametrize("cfg", [GPT, dataclasses.replace(T5, num_layers=2)], ids=["gpt", "t5-relative"])
def test_causal_lm_packed_segments_equal_each_sequence_alone(cfg):
  model, params = causal_params(cfg)
  apply = jax.jit(model.apply)
  a, b = [5, 9, 2, 11, 30], [7, 1, 8, 8, 19, 25, 4]
  packed = apply({"params": params}, *_pack([a, b], 16))
  alone_a = apply({"params": params}, *_pack([a], 16))  # Padded to the same shape: one compilation.
  alone_b = apply({"params": params}, *_pack([b], 16))
  np.testing.assert_allclose(np.asarray(packed[0, :5]), np.asarray(alone_a[0, :5]), atol=1e-5)
  np.testing.assert_allclose(np.asarray(packed[0, 5:12]), np.asarray(alone_b[0, :7]), atol=1e-5)


@pytest.mark.parametrize("cfg", [BART, T5], ids=["bart", "t5"])
def test_encoder_decoder_packed_pairs_equal_each_pair_alone(cfg):
  model, params = seq2seq_params(cfg)
  pairs = [([4, 9, 13, 2], [1, 22, 5]), ([8, 8, 31, 6, 17, 2], [1, 9, 9, 14, 3])]
  enc = _pack([s for s, _ in pairs], 12, fill=6)
  dec = _pack([t for _, t in pairs], 10, fill=6)
  apply = jax.jit(model.apply)
  packed = np.asarray(apply({"params": params}, *enc, *dec))
  start = 0
  for source, target in pairs:
    alone = np.asarray(apply({"params": params}, *_pack([source], 12, fill=6), *_pack([target], 10, fill=6)))
    np.testing.assert_allclose(packed[0, start:start + len(target)], alone[0, :len(target)], atol=1e-5)
    start += len(target)


# ----------------------------------------------------------------------------- key-value cache


def _run_steps(step_fn, cache, tokens_BL, start=0, stop=None):
  out = []
  for t in range(start, tokens_BL.shape[1] if stop is None else stop):
    logits_BV, cache = step_fn(cache, jnp.asarray(tokens_BL[:, t]), jnp.int32(t))
    out.append(np.asarray(logits_BV))
  return np.stack(out, axis=1), cache


def _check_cache_leaves(cache, batch):
  for path, leaf in jax.tree_util.tree_leaves_with_path(cache):
    assert leaf.ndim >= 2 and leaf.shape[0] == batch, (jax.tree_util.keystr(path), leaf.shape)


@pytest.mark.parametrize("cfg", [GPT, dataclasses.replace(GPT, remat="block")], ids=["gpt", "gpt-remat"])
def test_causal_lm_cache_steps_equal_the_full_pass_and_survive_reordering(cfg):
  model, params = causal_params(cfg)
  rng = np.random.default_rng(2)
  B, L = 3, 12
  ids = rng.integers(0, V, size=(B, L)).astype(np.int32)
  full = np.asarray(jax.jit(model.apply)({"params": params}, ids, *one_segment(ids)))
  cache, step_fn = causal_lm_decoder(model, params, B, L)
  _check_cache_leaves(cache, B)
  assert all(not np.asarray(x).any() for x in jax.tree.leaves(cache))  # Starts empty.
  stepped, _ = _run_steps(step_fn, cache, ids)
  np.testing.assert_allclose(stepped, full, atol=1e-5)

  # Reorder (and repeat) rows mid-way, as beam search does: each row keeps decoding its own sequence.
  _, cache = _run_steps(step_fn, cache, ids, stop=5)
  rows = np.array([2, 0, 2, 1])
  reordered = jax.tree.map(lambda x: jnp.take(x, rows, axis=0), cache)
  rest, _ = _run_steps(step_fn, reordered, ids[rows], start=5)
  np.testing.assert_allclose(rest, full[rows, 5:], atol=1e-5)


@pytest.mark.parametrize("cfg", [BART, T5], ids=["bart-post-ln", "t5-pre-ln-rms-relative"])
def test_encoder_decoder_cache_steps_equal_the_full_pass_and_survive_reordering(cfg):
  model, params = seq2seq_params(cfg)
  rng = np.random.default_rng(3)
  B, S, L = 3, 7, 10
  src = rng.integers(0, V, size=(B, S)).astype(np.int32)
  src_seg = np.ones_like(src)
  src_seg[0, 4:] = 0  # A shorter source, padded: padding must stay invisible to the cached cross-attention.
  src_pos = np.asarray(segment_positions(jnp.asarray(src_seg)))
  tgt = rng.integers(0, V, size=(B, L)).astype(np.int32)
  full = np.asarray(jax.jit(model.apply)({"params": params}, src, src_seg, src_pos, tgt, *one_segment(tgt)))
  cache, step_fn = encoder_decoder_decoder(model, params, src, src_seg, L)
  _check_cache_leaves(cache, B)
  stepped, _ = _run_steps(step_fn, cache, tgt)
  np.testing.assert_allclose(stepped, full, atol=1e-5)

  _, cache = _run_steps(step_fn, cache, tgt, stop=4)
  rows = np.array([1, 1, 0, 2])
  reordered = jax.tree.map(lambda x: jnp.take(x, rows, axis=0), cache)
  rest, _ = _run_steps(step_fn, reordered, tgt[rows], start=4)
  np.testing.assert_allclose(rest, full[rows, 4:], atol=1e-5)


def test_step_fn_is_jittable_with_the_cache_as_a_pytree():
  model, params = causal_params(GPT)
  cache, step_fn = causal_lm_decoder(model, params, 2, 6)
  ids = np.array([[3, 14, 15, 9, 2, 6], [5, 3, 5, 8, 9, 7]], np.int32)

  @jax.jit
  def greedy_free_run(cache):
    def body(t, carry):
      cache, out = carry
      logits, cache = step_fn(cache, jnp.asarray(ids)[:, t], t)
      return cache, out.at[:, t].set(logits)
    return jax.lax.fori_loop(0, 6, body, (cache, jnp.zeros((2, 6, V))))[1]

  full = np.asarray(model.apply({"params": params}, ids, *one_segment(ids)))
  np.testing.assert_allclose(np.asarray(greedy_free_run(cache)), full, atol=1e-5)


def test_cache_longer_than_learned_positions_is_refused():
  model, params = causal_params(GPT)
  with pytest.raises(ValueError, match="max_length 25 exceeds model.max_position_embeddings 24"):
    causal_lm_decoder(model, params, 1, 25)


def test_parameter_trees():
  _, gpt = causal_params(GPT)
  assert set(gpt) == {"decoder"} and set(gpt["decoder"]) == {"embeddings", "layer_0", "final_norm"}
  assert set(gpt["decoder"]["embeddings"]) == {"word", "position"}
  _, bart = seq2seq_params(BART)
  assert set(bart) == {"encoder", "decoder", "output_bias"}
  assert set(bart["decoder"]) == {"embeddings", "layer_0", "layer_1"}
  assert set(bart["encoder"]) == {"embeddings", "layer_0"}
  assert set(bart["decoder"]["embeddings"]) == {"position", "norm"}  # The word table is the encoder's.
  assert set(bart["decoder"]["layer_0"]) == {"self_attention", "cross_attention", "mlp", "self_attention_norm",
                                             "cross_attention_norm", "mlp_norm"}
  _, t5 = seq2seq_params(T5)
  assert set(t5) == {"encoder", "decoder", "lm_head"}
  assert set(t5["decoder"]) == {"layer_0", "layer_1", "relative_bias", "final_norm"}
  assert t5["encoder"]["relative_bias"]["embedding"].shape == (8, 2)
  layer = t5["decoder"]["layer_0"]
  assert set(layer["mlp"]) == {"wi_0", "wi_1", "wo"} and set(layer["mlp"]["wo"]) == {"kernel"}
  assert set(layer["self_attention"]) == {"query", "key", "value", "out_kernel"}
  assert layer["self_attention"]["query"]["kernel"].shape == (16, 2, 6)
  assert set(layer["mlp_norm"]) == {"scale"}


# ----------------------------------------------------------------------------- T5 relative position buckets


def test_relative_position_buckets_hand_worked():
  """T5's defaults (32 buckets, max distance 128), worked by hand from the bucketing formula:
  bidirectional: 16 buckets a side, exact below 8, then 8 + floor(log(n / 8) / log(16) * 8), at most 15;
  causal: 32 buckets for keys before the query, exact below 16, then 16 + floor(log(n / 16) / log(8) * 16)."""
  relative = jnp.array([0, -1, 1, -7, 7, -8, 8, -16, 16, -127, -128, -1000, 1000])
  bidirectional = [0, 1, 17, 7, 23, 8, 24, 10, 26, 15, 15, 15, 31]
  np.testing.assert_array_equal(np.asarray(relative_position_buckets(relative, 32, 128, True)), bidirectional)
  relative = jnp.array([0, 5, -1, -15, -16, -32, -64, -100, -128, -5000])
  causal = [0, 0, 1, 15, 16, 21, 26, 30, 31, 31]
  np.testing.assert_array_equal(np.asarray(relative_position_buckets(relative, 32, 128, False)), causal)


def test_config_validation_names_the_model_key():
  from flaxlm import config as config_lib
  for key, value, message in [("norm_type", "batch", "'batch' is not one of"),
                              ("position_embedding", "rotary", "'rotary' is not one of"),
                              ("activation", "silu", "'silu' is not one of"),
                              ("relative_buckets", 7, "even number"),
                              ("num_decoder_layers", -1, "must be >= 0"),
                              ("scale_tied_logits", True, "needs model.tie_embeddings=True")]:
    c = config_lib.base_config()
    c.model[key] = value
    if key == "relative_buckets":
      c.model.position_embedding = "relative"
    if key == "scale_tied_logits":
      c.model.tie_embeddings = False
    with pytest.raises(config_lib.ConfigError, match=f"config.model.{key}: .*{message}"):
      config_lib.validate(c)
  c = config_lib.base_config()
  c.model.hidden_size, c.model.num_heads, c.model.attention_head_dim = 30, 4, 8  # T5-style d_kv: allowed.
  config_lib.validate(c)
  with pytest.raises(ValueError, match="norm_type 'batch'"):
    ModelConfig(vocab_size=10, norm_type="batch")
