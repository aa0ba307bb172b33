"""The train state: everything a step changes, and all a checkpoint needs besides the data position."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
  """step, params, optimizer state, the run's base RNG key (per-step keys fold in the step), and
  how many updates were skipped for non-finite values."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  skipped_updates: jax.Array

  def step_rng(self) -> jax.Array:
    """The key for this step's masking and dropout: a pure function of (seed, step)."""
    return jax.random.fold_in(self.rng, self.step)
