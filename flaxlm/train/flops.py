"""Analytic FLOP counts for perf/mfu, and the peak FLOP/s they are divided by."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from flaxlm.models.layers import ModelConfig

# Dense bf16 peak per chip, from the vendors' published figures.
_PUBLISHED_PEAK_FLOPS = {
    "TPU v2": 45e12,
    "TPU v3": 123e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA A100": 312e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA B200": 2250e12,
}


def encoder_forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Forward FLOPs of the encoder stack per token (matmuls only; a multiply-add counts 2).

  Per layer: Q, K, V and output projections 8 D^2, feed-forward 4 D F, and attention scores plus
  the weighted sum of values 4 L D (every token attends over the whole row).
  """
  D, F = cfg.hidden_size, cfg.mlp_dim
  return cfg.num_layers * (8 * D * D + 4 * D * F + 4 * seq_len * D)


def encoder_decoder_forward_flops_per_row(cfg: ModelConfig, source_len: int, target_len: int) -> float:
  """Forward FLOPs of an encoder-decoder row: the encoder over the source, the decoder over the target
  (self-attention and feed-forward as an encoder layer, plus cross-attention: query and output projections
  2 x 2 D^2 per target token, keys and values 2 x 2 D^2 per source token, scores and weighted sum 4 S D per
  target token) and the LM head 2 D V per target token."""
  D = cfg.hidden_size
  layers = cfg.num_decoder_layers or cfg.num_layers
  decoder_per_token = (encoder_forward_flops_per_token(cfg, target_len) / cfg.num_layers + 4 * D * D
                       + 4 * source_len * D) * layers
  cross_keys_values = layers * 4 * D * D * source_len
  return (source_len * encoder_forward_flops_per_token(cfg, source_len) + cross_keys_values
          + target_len * (decoder_per_token + 2 * D * cfg.vocab_size))


def mlm_head_forward_flops(cfg: ModelConfig) -> float:
  """Forward FLOPs of the MLM head per predicted position: transform 2 D^2, tied decoder 2 D V."""
  D = cfg.hidden_size
  return 2 * D * D + 2 * D * cfg.vocab_size


def mlm_train_flops_per_row(cfg: ModelConfig, seq_len: int, max_predictions: int) -> float:
  """Training FLOPs per row (forward + backward = 3x forward) with the head at P positions only."""
  forward = seq_len * encoder_forward_flops_per_token(cfg, seq_len) + max_predictions * mlm_head_forward_flops(cfg)
  return 3.0 * forward


def published_peak_flops(device_kind: str) -> float | None:
  """The published bf16 peak of an accelerator, or None when unknown."""
  for prefix in sorted(_PUBLISHED_PEAK_FLOPS, key=len, reverse=True):
    if device_kind.startswith(prefix):
      return _PUBLISHED_PEAK_FLOPS[prefix]
  return None


@functools.cache
def measured_matmul_peak(n: int = 1024, dtype=jnp.float32, repeats: int = 5) -> float:
  """Best FLOP/s of an n x n matmul on the default device: the practical peak of a CPU."""
  a = jnp.ones((n, n), dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n**3 / best


def peak_flops_per_device(configured: float = 0.0) -> float:
  """Peak FLOP/s of one device: the configured value, else the published one, else measured."""
  if configured > 0:
    return configured
  device = jax.devices()[0]
  return published_peak_flops(device.device_kind) or measured_matmul_peak()
