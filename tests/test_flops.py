"""The analytic FLOP count against a hand-worked example and against XLA's own count."""

import jax
import jax.numpy as jnp
import pytest

from flaxlm.models import BertForMaskedLM, ModelConfig
from flaxlm.train import flops


def test_hand_worked_count():
  cfg = ModelConfig(vocab_size=10, hidden_size=4, num_layers=1, num_heads=1, mlp_dim=8)
  # Per token per layer: 8*4*4 (QKVO) + 4*4*8 (FFN) + 4*3*4 (attention over L=3) = 128 + 128 + 48.
  assert flops.encoder_forward_flops_per_token(cfg, 3) == 304
  # Head per prediction: 2*4*4 (transform) + 2*4*10 (decoder) = 112.
  assert flops.mlm_head_forward_flops(cfg) == 112
  assert flops.mlm_train_flops_per_row(cfg, seq_len=3, max_predictions=2) == 3 * (3 * 304 + 2 * 112)


def test_forward_count_agrees_with_xla_cost_analysis():
  cfg = ModelConfig(vocab_size=2000, hidden_size=128, num_layers=2, num_heads=4, mlp_dim=512,
                    max_position_embeddings=64, dropout_rate=0.0, attention_dropout_rate=0.0)
  B, L, P = 4, 64, 10
  model = BertForMaskedLM(cfg)
  z = jnp.zeros((B, L), jnp.int32)
  zp = jnp.zeros((B, P), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), z, z + 1, z, z, zp)["params"]
  forward = jax.jit(lambda p, ids: model.apply({"params": p}, ids, z + 1, z, z, zp))
  cost = forward.lower(params, z).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  analytic = B * (L * flops.encoder_forward_flops_per_token(cfg, L) + P * flops.mlm_head_forward_flops(cfg))
  # XLA also counts elementwise work (softmax, GELU, LayerNorm), a few percent on top of the matmuls.
  assert cost["flops"] == pytest.approx(analytic, rel=0.1)
  assert cost["flops"] >= analytic * 0.99


def test_published_peaks():
  assert flops.published_peak_flops("TPU v4") == 275e12
  assert flops.published_peak_flops("TPU v5 lite") == 197e12
  assert flops.published_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert flops.published_peak_flops("cpu") is None
  assert flops.peak_flops_per_device(5e12) == 5e12
