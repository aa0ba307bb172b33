"""Learning-rate schedule, weight-decay mask and the AdamW update against hand-worked NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm import config as config_lib
from flaxlm.train.optimizer import learning_rate_schedule, make_optimizer, weight_decay_mask


def _opt(**kw):
  c = config_lib.base_config().optimizer
  for k, v in kw.items():
    c[k] = v
  return c


def test_linear_warmup_then_linear_decay():
  s = learning_rate_schedule(_opt(learning_rate=1e-3, warmup_steps=10, decay="linear"), num_steps=100)
  for step, want in [(0, 0.0), (5, 5e-4), (10, 1e-3), (55, 5e-4), (100, 0.0)]:
    assert float(s(step)) == pytest.approx(want, abs=1e-9)


def test_cosine_decay_and_end_fraction():
  s = learning_rate_schedule(_opt(learning_rate=2e-3, warmup_steps=0, decay="cosine", end_lr_fraction=0.1), 100)
  assert float(s(0)) == pytest.approx(2e-3)
  assert float(s(50)) == pytest.approx(2e-4 + (2e-3 - 2e-4) * 0.5, rel=1e-5)
  assert float(s(100)) == pytest.approx(2e-4, rel=1e-5)
  constant = learning_rate_schedule(_opt(learning_rate=1e-4, warmup_steps=4, decay="constant"), 100)
  assert [float(constant(i)) for i in (2, 4, 99)] == pytest.approx([5e-5, 1e-4, 1e-4])


def test_weight_decay_mask_spares_biases_and_layernorm():
  params = {"dense": {"kernel": 1, "bias": 2}, "norm": {"scale": 3, "bias": 4}, "mlm_bias": 5,
            "embed": {"embedding": 6}}
  assert weight_decay_mask(params) == {"dense": {"kernel": True, "bias": False},
                                       "norm": {"scale": False, "bias": False}, "mlm_bias": False,
                                       "embed": {"embedding": True}}


def test_adamw_with_clipping_and_mask_matches_numpy():
  lr, b1, b2, eps, wd, clip = 1e-2, 0.9, 0.999, 1e-6, 0.1, 1.0
  tx = make_optimizer(_opt(learning_rate=lr, warmup_steps=0, decay="constant", b1=b1, b2=b2, eps=eps,
                           weight_decay=wd, grad_clip_norm=clip), num_steps=10)
  params = {"w": {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]])}, "n": {"bias": jnp.array([0.5, -0.5])}}
  grads_seq = [{"w": {"kernel": jnp.array([[3.0, 0.0], [4.0, 0.0]])}, "n": {"bias": jnp.array([0.0, 0.0])}},
               {"w": {"kernel": jnp.array([[0.1, 0.2], [0.0, -0.1]])}, "n": {"bias": jnp.array([0.3, 0.0])}}]
  state = tx.init(params)
  p = {k: {kk: np.asarray(vv, np.float64) for kk, vv in v.items()} for k, v in params.items()}
  m = jax.tree.map(np.zeros_like, p)
  v = jax.tree.map(np.zeros_like, p)
  for t, grads in enumerate(grads_seq, start=1):
    updates, state = tx.update(grads, state, params)
    params = jax.tree.map(lambda a, b: a + b, params, updates)
    g = jax.tree.map(lambda x: np.asarray(x, np.float64), grads)
    norm = np.sqrt(sum((x**2).sum() for x in jax.tree.leaves(g)))
    g = jax.tree.map(lambda x: x * min(1.0, clip / norm), g)
    m = jax.tree.map(lambda mm, gg: b1 * mm + (1 - b1) * gg, m, g)
    v = jax.tree.map(lambda vv, gg: b2 * vv + (1 - b2) * gg**2, v, g)
    for name, leaf, decay in (("w", "kernel", True), ("n", "bias", False)):
      mhat = m[name][leaf] / (1 - b1**t)
      vhat = v[name][leaf] / (1 - b2**t)
      step = mhat / (np.sqrt(vhat) + eps) + (wd * p[name][leaf] if decay else 0.0)
      p[name][leaf] = p[name][leaf] - lr * step
  for name, leaf in (("w", "kernel"), ("n", "bias")):
    np.testing.assert_allclose(np.asarray(params[name][leaf]), p[name][leaf], rtol=1e-5, atol=1e-6)


def test_lamb_is_selectable_and_updates():
  tx = make_optimizer(_opt(name="lamb", learning_rate=1e-2, warmup_steps=0), num_steps=10)
  params = {"k": {"kernel": jnp.ones((3, 3))}}
  updates, _ = tx.update({"k": {"kernel": jnp.full((3, 3), 0.5)}}, tx.init(params), params)
  # LAMB scales the Adam step by the trust ratio ||w|| / ||step||: here every entry moves by lr * ratio.
  adam_step = 1.0 + 0.01  # m/sqrt(v) = 1 at t=1, plus weight decay 0.01 * w.
  ratio = np.linalg.norm(np.ones((3, 3))) / np.linalg.norm(np.full((3, 3), adam_step))
  np.testing.assert_allclose(np.asarray(updates["k"]["kernel"]), -1e-2 * adam_step * ratio, rtol=1e-4)


def test_schedule_steps_decouples_the_schedule_from_the_run_length():
  s = learning_rate_schedule(_opt(learning_rate=1e-3, warmup_steps=0, decay="linear", schedule_steps=200), 100)
  assert float(s(100)) == pytest.approx(5e-4)
