"""MLM corruption statistics over many draws, checked against the configured rates."""

import functools

import jax
import numpy as np
import pytest

from flaxlm.tasks.masking import MaskingConfig, mask_tokens

V = 100
SPECIALS = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]
MASK = 4


def _batch(rows=64, length=64, seed=0):
  """Packed rows: two segments of [CLS] words [SEP], then padding."""
  rng = np.random.default_rng(seed)
  ids = np.zeros((rows, length), np.int32)
  seg = np.zeros((rows, length), np.int32)
  for r in range(rows):
    n1, n2 = rng.integers(10, 30), rng.integers(5, 25)
    for s, (start, n) in enumerate(((0, n1), (n1, n2)), start=1):
      ids[r, start:start + n] = rng.integers(5, V, size=n)
      ids[r, start], ids[r, start + n - 1] = 2, 3
      seg[r, start:start + n] = s
  word_start = (rng.random((rows, length)) < 0.6).astype(np.int32)
  word_start[ids < 5] = 1
  return ids, seg, word_start


def _config(**kw):
  return MaskingConfig(mask_id=MASK, special_ids=SPECIALS, vocab_size=V, max_predictions=kw.pop("max_predictions", 16),
                       **kw)


@functools.lru_cache(maxsize=None)
def _masker(cfg):
  return jax.jit(lambda key, ids, seg, ws: mask_tokens(key, ids, seg, ws, cfg))


def _draw(cfg, ids, seg, ws, seed):
  return [np.asarray(x) for x in _masker(cfg)(jax.random.PRNGKey(seed), ids, seg, ws)]


def test_rates_specials_and_padding():
  cfg = _config()
  ids, seg, ws = _batch()
  eligible = (seg > 0) & (ids >= 5)
  chosen_total = eligible_total = 0
  as_mask = as_random = kept = 0
  for seed in range(40):
    corrupted, positions, targets, weights = _draw(cfg, ids, seg, ws, seed)
    w = weights > 0
    rows = np.arange(ids.shape[0])[:, None].repeat(positions.shape[1], 1)
    # Chosen positions are real, non-special tokens, distinct within a row, with the right targets.
    assert eligible[rows[w], positions[w]].all()
    for r in range(ids.shape[0]):
      assert len(set(positions[r][w[r]])) == w[r].sum()
      assert w[r].sum() == min(round(0.15 * eligible[r].sum()), 16)
    np.testing.assert_array_equal(targets[w], ids[rows[w], positions[w]])
    # Nothing outside the chosen positions changes.
    changed = corrupted != ids
    chosen_mask = np.zeros_like(changed)
    chosen_mask[rows[w], positions[w]] = True
    assert not (changed & ~chosen_mask).any()
    new = corrupted[rows[w], positions[w]]
    as_mask += (new == MASK).sum()
    kept += (new == targets[w]).sum()
    random_tokens = new[(new != MASK) & (new != targets[w])]
    as_random += random_tokens.size
    assert (random_tokens >= 5).all()  # Never a special token as a replacement.
    chosen_total += w.sum()
    eligible_total += eligible.sum()
  n = chosen_total
  assert abs(as_mask / n - 0.8) < 0.02
  # A random draw equal to the original token counts as kept: expected 0.1 * (1 - 1/95).
  assert abs(as_random / n - 0.1 * (1 - 1 / 95)) < 0.015
  assert abs(kept / n - (0.1 + 0.1 / 95)) < 0.015
  assert abs(chosen_total / eligible_total - 0.15) < 0.01


def test_positions_are_uniform_over_eligible_tokens():
  cfg = _config()
  ids, seg, ws = _batch(rows=8)
  counts = np.zeros(ids.shape)
  draws = 300
  for seed in range(draws):
    _, positions, _, weights = _draw(cfg, ids, seg, ws, seed)
    for r in range(ids.shape[0]):
      np.add.at(counts[r], positions[r][weights[r] > 0], 1)
  eligible = (seg > 0) & (ids >= 5)
  rates = counts[eligible] / draws
  assert (counts[~eligible] == 0).all()
  # Each eligible token is chosen with probability budget / eligible (about 0.15); 300 draws.
  expected = np.concatenate([np.full(e, min(round(0.15 * e), 16) / e) for e in eligible.sum(1)])
  assert np.abs(rates - expected).max() < 0.09
  assert abs(rates.mean() - expected.mean()) < 0.01


def test_deterministic_given_key_and_different_across_keys():
  cfg = _config()
  ids, seg, ws = _batch(rows=4)
  a, b, c = _draw(cfg, ids, seg, ws, 7), _draw(cfg, ids, seg, ws, 7), _draw(cfg, ids, seg, ws, 8)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[1], c[1])


def test_budget_is_capped_by_max_predictions():
  cfg = _config(mask_rate=0.5, max_predictions=5)
  ids, seg, ws = _batch(rows=16)
  _, _, _, weights = _draw(cfg, ids, seg, ws, 0)
  assert (weights.sum(1) == 5).all()


def test_whole_word_masking_masks_complete_words():
  cfg = _config(whole_word=True, max_predictions=20)
  ids, seg, ws = _batch(rows=32)
  eligible = (seg > 0) & (ids >= 5)
  word_id = np.cumsum(ws, axis=1)
  total_chosen = total_eligible = 0
  for seed in range(20):
    _, positions, _, weights = _draw(cfg, ids, seg, ws, seed)
    for r in range(ids.shape[0]):
      chosen = set(positions[r][weights[r] > 0].tolist())
      for w in {word_id[r, p] for p in chosen}:
        word_tokens = {i for i in range(ids.shape[1]) if word_id[r, i] == w and eligible[r, i]}
        assert word_tokens <= chosen, f"row {r}: word {w} partly masked"
      assert len(chosen) <= round(0.15 * eligible[r].sum())
      total_chosen += len(chosen)
      total_eligible += eligible[r].sum()
  # Whole words cannot always fill the budget exactly, but come close to 15% on average.
  assert 0.10 < total_chosen / total_eligible <= 0.15


@pytest.mark.parametrize("probs", [(1.0, 0.0), (0.0, 1.0), (0.0, 0.0)])
def test_replacement_probabilities_at_their_extremes(probs):
  cfg = _config(mask_token_prob=probs[0], random_token_prob=probs[1])
  ids, seg, ws = _batch(rows=16)
  corrupted, positions, targets, weights = _draw(cfg, ids, seg, ws, 3)
  w = weights > 0
  rows = np.arange(ids.shape[0])[:, None].repeat(positions.shape[1], 1)
  new = corrupted[rows[w], positions[w]]
  if probs[0] == 1.0:
    assert (new == MASK).all()
  elif probs[1] == 1.0:
    assert (new != MASK).all() and (new >= 5).all() and (new != targets[w]).mean() > 0.9
  else:
    np.testing.assert_array_equal(corrupted, ids)
