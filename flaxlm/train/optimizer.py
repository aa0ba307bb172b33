"""Optimizers (AdamW, LAMB), the learning-rate schedule, and the weight-decay mask."""

from __future__ import annotations

import jax
import optax

# Parameter leaves that take no weight decay: biases and LayerNorm gains, as in BERT.
_NO_DECAY_LEAVES = ("bias", "scale", "mlm_bias")


def learning_rate_schedule(opt_config, num_steps: int) -> optax.Schedule:
  """Linear warmup from 0, then linear or cosine decay to end_lr_fraction * lr (or constant).

  The schedule spans optimizer.schedule_steps when set, else `num_steps`.
  """
  num_steps = opt_config.schedule_steps or num_steps
  peak = opt_config.learning_rate
  end = peak * opt_config.end_lr_fraction
  warmup = min(opt_config.warmup_steps, num_steps)
  decay_steps = max(num_steps - warmup, 1)
  if opt_config.decay == "linear":
    after = optax.linear_schedule(peak, end, decay_steps)
  elif opt_config.decay == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=opt_config.end_lr_fraction)
  else:
    after = optax.constant_schedule(peak)
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def weight_decay_mask(params):
  """True for leaves that decay (kernels and embeddings), False for biases and LayerNorm."""
  def decays(path, _):
    return getattr(path[-1], "key", None) not in _NO_DECAY_LEAVES
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(opt_config, num_steps: int) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW or LAMB with the schedule and the decay mask."""
  schedule = learning_rate_schedule(opt_config, num_steps)
  kwargs = dict(b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps, weight_decay=opt_config.weight_decay,
                mask=weight_decay_mask)
  if opt_config.name == "adamw":
    update = optax.adamw(schedule, **kwargs)
  else:
    update = optax.lamb(schedule, **kwargs)
  if opt_config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(opt_config.grad_clip_norm), update)
  return update
