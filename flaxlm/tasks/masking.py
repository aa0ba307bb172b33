"""Masked-LM corruption inside the jitted step, with static shapes.

Each row draws a uniform score per token; tokens that may not be chosen (specials, padding) get
-inf, and the `max_predictions` highest scores are the candidates. The first
round(mask_rate * eligible tokens) of them are kept (weight 1), the rest are padding (weight 0).
With whole-word masking every token of a word shares its word's score, so a word's tokens are
adjacent among the candidates and a word is kept only if all its tokens fit in the budget.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """What to corrupt and how; `special_ids` are never chosen and never drawn as replacements."""

  mask_id: int
  special_ids: tuple[int, ...]
  vocab_size: int
  max_predictions: int
  mask_rate: float = 0.15
  mask_token_prob: float = 0.8
  random_token_prob: float = 0.1
  whole_word: bool = False

  @property
  def replacement_ids(self) -> np.ndarray:
    """Token ids a random replacement is drawn from: every non-special id."""
    return np.setdiff1d(np.arange(self.vocab_size), np.array(self.special_ids, dtype=np.int64)).astype(np.int32)


def _rows_of(draw, shape, rows):
  """`draw(shape)` for the whole batch, then the rows this shard holds: so a batch split over
  pmap devices gets exactly the random numbers the unsplit batch would (rows = (offset, total))."""
  if rows is None:
    return draw(shape)
  offset, total = rows
  return jax.lax.dynamic_slice_in_dim(draw((total, *shape[1:])), offset, shape[0], axis=0)


def mask_tokens(rng, input_ids_BL, segment_ids_BL, word_start_BL, cfg: MaskingConfig, rows=None):
  """Corrupts a batch for MLM.

  Returns (corrupted input_ids [B, L], masked_positions [B, P], target_ids [B, P], weights [B, P]),
  P = cfg.max_predictions; padding slots point at position 0 with weight 0. `rows` = (offset,
  total) says this batch is rows offset.. of a `total`-row batch, for identical draws under pmap.
  """
  B, L = input_ids_BL.shape
  P = cfg.max_predictions
  choose_rng, action_rng, replace_rng = jax.random.split(rng, 3)

  is_special_BL = jnp.isin(input_ids_BL, jnp.asarray(cfg.special_ids, jnp.int32))
  eligible_BL = (segment_ids_BL > 0) & ~is_special_BL
  scores_BL = _rows_of(lambda shape: jax.random.uniform(choose_rng, shape), (B, L), rows)
  if cfg.whole_word:
    # Word index of each token; every piece takes the score of its word's first piece, so each
    # word (not each token) is equally likely to be chosen.
    word_id_BL = jnp.cumsum(word_start_BL.astype(jnp.int32), axis=1)
    first_piece_scores_BL = jnp.where(word_start_BL > 0, scores_BL, 0.0)
    word_scores_BW = jnp.zeros((B, L + 1)).at[jnp.arange(B)[:, None], word_id_BL].add(first_piece_scores_BL)
    scores_BL = jnp.take_along_axis(word_scores_BW, word_id_BL, axis=1)
  scores_BL = jnp.where(eligible_BL, scores_BL, -jnp.inf)
  _, positions_BP = jax.lax.top_k(scores_BL, P)

  num_eligible_B = eligible_BL.sum(axis=1)
  budget_B = jnp.minimum(jnp.round(cfg.mask_rate * num_eligible_B).astype(jnp.int32), P)
  rank_P = jnp.arange(P)
  chosen_BP = (rank_P[None, :] < budget_B[:, None]) & jnp.take_along_axis(eligible_BL, positions_BP, axis=1)
  if cfg.whole_word:
    chosen_BP = _whole_words_only(chosen_BP, positions_BP, word_id_BL, eligible_BL)

  targets_BP = jnp.take_along_axis(input_ids_BL, positions_BP, axis=1)
  action_BP = _rows_of(lambda shape: jax.random.uniform(action_rng, shape), (B, P), rows)
  replacements = jnp.asarray(cfg.replacement_ids)
  random_BP = replacements[_rows_of(lambda shape: jax.random.randint(replace_rng, shape, 0, replacements.shape[0]),
                                    (B, P), rows)]
  new_BP = jnp.where(action_BP < cfg.mask_token_prob, cfg.mask_id,
                     jnp.where(action_BP < cfg.mask_token_prob + cfg.random_token_prob, random_BP, targets_BP))
  # Unchosen slots write their own token back, so scattering every slot is safe.
  new_BP = jnp.where(chosen_BP, new_BP, targets_BP)
  corrupted_BL = input_ids_BL.at[jnp.arange(B)[:, None], positions_BP].set(new_BP)
  positions_BP = jnp.where(chosen_BP, positions_BP, 0)
  targets_BP = jnp.where(chosen_BP, targets_BP, 0)
  return corrupted_BL, positions_BP, targets_BP, chosen_BP.astype(jnp.float32)


def _whole_words_only(chosen_BP, positions_BP, word_id_BL, eligible_BL):
  """Drops candidates whose word is not wholly inside the chosen set."""
  B, L = word_id_BL.shape
  rows = jnp.arange(B)[:, None]
  word_BP = jnp.take_along_axis(word_id_BL, positions_BP, axis=1)
  word_len_BW = jnp.zeros((B, L + 1), jnp.int32).at[rows, word_id_BL].add(eligible_BL.astype(jnp.int32))
  chosen_per_word_BW = jnp.zeros((B, L + 1), jnp.int32).at[rows, word_BP].add(chosen_BP.astype(jnp.int32))
  whole_BP = jnp.take_along_axis(chosen_per_word_BW, word_BP, axis=1) == jnp.take_along_axis(word_len_BW, word_BP, axis=1)
  return chosen_BP & whole_BP
