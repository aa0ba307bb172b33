"""T5 span corruption, BART infilling and sentence permutation: hand-worked cases and statistics over
many seeded draws, checked against the rates in the papers and against layouts enumerated by brute force."""

import collections
import itertools
import math

import numpy as np
import pytest

from flaxlm.tasks.noising import (infilling_spans, permute_sentences, random_spans_noise_mask,
                                  reassemble_span_corruption, span_corruption, text_infilling)

EOS = 1
MASK = 4
SENTINELS = list(range(32099, 31999, -1))  # T5 style: <extra_id_0> is the highest id, counting down
S0, S1 = SENTINELS[:2]


def _runs(mask):
  """Lengths of the runs of True in a bool sequence."""
  return [len(list(group)) for value, group in itertools.groupby(mask) if value]


# --- random_spans_noise_mask ---------------------------------------------------------------------

@pytest.mark.parametrize("length,density,mean_span,expected", [
    (2, 0.15, 3.0, [0, 1]),  # 0.3 rounds to 0 noise, raised to 1; one span, after the one kept token
    (3, 0.5, 2.0, [0, 1, 1]),  # 1.5 -> 2 noise tokens, 2 / 2 = 1 span
    (4, 0.5, 1.0, [0, 1, 0, 1]),  # 2 noise, 2 spans, 2 kept: the only split is one token each
    (5, 0.99, 3.0, [0, 1, 1, 1, 1]),  # noise capped at length - 1
])
def test_noise_mask_forced_layouts(length, density, mean_span, expected):
  for seed in range(5):
    mask = random_spans_noise_mask(length, density, mean_span, np.random.default_rng(seed))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, np.array(expected, bool))


def test_noise_mask_is_uniform_over_all_valid_layouts():
  # length 10, density 0.3 -> 3 noise tokens; mean span 1.5 -> 2 spans, so 7 kept tokens in 2 runs.
  # Valid layouts, found by brute force over all 2^10 masks: start kept, end noise, 3 noise in 2 runs.
  valid = {m for m in itertools.product((False, True), repeat=10)
           if not m[0] and m[-1] and sum(m) == 3 and len(_runs(m)) == 2}
  assert len(valid) == 12  # C(2, 1) splits of the noise times C(6, 1) splits of the kept tokens
  draws = 3000
  counts = collections.Counter(
      tuple(random_spans_noise_mask(10, 0.3, 1.5, np.random.default_rng(seed)).tolist()) for seed in range(draws))
  assert set(counts) == valid
  expected = draws / len(valid)  # 250, binomial sd ~15
  assert all(abs(c - expected) < 75 for c in counts.values()), counts


def test_noise_mask_more_spans_than_room_are_capped():
  # density 0.8, span length 1 asks for 8 spans, but 2 kept tokens only separate 2 spans.
  mask = random_spans_noise_mask(10, 0.8, 1.0, np.random.default_rng(0))
  assert mask.sum() == 8 and len(_runs(mask)) == 2 and not mask[0]


def test_noise_mask_rejects_bad_arguments():
  with pytest.raises(ValueError, match="at least 2 tokens"):
    random_spans_noise_mask(1, 0.15, 3.0, np.random.default_rng(0))
  with pytest.raises(ValueError, match="noise_density"):
    random_spans_noise_mask(10, 1.0, 3.0, np.random.default_rng(0))
  with pytest.raises(ValueError, match="mean_noise_span_length"):
    random_spans_noise_mask(10, 0.15, 0.0, np.random.default_rng(0))


# --- span_corruption ------------------------------------------------------------------------------

def test_span_corruption_hand_worked():
  rng = np.random.default_rng(0)
  inputs, targets = span_corruption([7, 8], rng, sentinel_ids=SENTINELS, eos_id=EOS)
  np.testing.assert_array_equal(inputs, [7, S0, EOS])
  np.testing.assert_array_equal(targets, [S0, 8, EOS])

  inputs, targets = span_corruption([11, 12, 13, 14], rng, noise_density=0.5, mean_span_length=1.0,
                                    sentinel_ids=SENTINELS, eos_id=EOS)
  np.testing.assert_array_equal(inputs, [11, S0, 13, S1, EOS])
  np.testing.assert_array_equal(targets, [S0, 12, S1, 14, EOS])
  assert inputs.dtype == targets.dtype == np.int32


def test_span_corruption_small_case_takes_every_layout():
  # 5 tokens, density 0.4 -> 2 noise tokens, span length 1 -> 2 spans of one token; the 3 kept
  # tokens split (1, 2) or (2, 1): noise at {1, 4} or {2, 4}.
  tokens = [21, 22, 23, 24, 25]
  expected = {
      ((21, S0, 23, 24, S1, EOS), (S0, 22, S1, 25, EOS)),
      ((21, 22, S0, 24, S1, EOS), (S0, 23, S1, 25, EOS)),
  }
  seen = collections.Counter()
  for seed in range(200):
    inputs, targets = span_corruption(tokens, np.random.default_rng(seed), noise_density=0.4, mean_span_length=1.0,
                                      sentinel_ids=SENTINELS, eos_id=EOS)
    seen[(tuple(inputs.tolist()), tuple(targets.tolist()))] += 1
  assert set(seen) == expected
  assert min(seen.values()) > 60, seen


def test_span_corruption_statistics_and_round_trip():
  rng = np.random.default_rng(1234)
  noise_total = spans_total = tokens_total = 0
  sentinel_set = set(SENTINELS)
  for seed in range(200):
    length = int(rng.integers(300, 700))
    tokens = rng.integers(5, 30000, size=length)
    inputs, targets = span_corruption(tokens.tolist(), np.random.default_rng(seed), sentinel_ids=SENTINELS,
                                      eos_id=EOS)
    assert inputs[-1] == EOS and targets[-1] == EOS
    in_sentinels = [t for t in inputs.tolist() if t in sentinel_set]
    tgt_sentinels = [t for t in targets.tolist() if t in sentinel_set]
    num_spans = len(in_sentinels)
    # Sentinels are used in order, once each, and the same ones on both sides.
    assert in_sentinels == tgt_sentinels == SENTINELS[:num_spans]
    # Two noise spans are always separated by a kept token: no two sentinels in a row in inputs.
    is_sentinel = np.isin(inputs, SENTINELS)
    assert not np.any(is_sentinel[1:] & is_sentinel[:-1])
    noise = len(targets) - 1 - num_spans
    assert len(inputs) - 1 - num_spans + noise == length
    # Per example (long sequences): density and mean span length near the configured ones.
    assert abs(noise / length - 0.15) <= 0.01
    assert abs(noise / num_spans - 3.0) <= 0.2
    noise_total, spans_total, tokens_total = noise_total + noise, spans_total + num_spans, tokens_total + length
    np.testing.assert_array_equal(reassemble_span_corruption(inputs, targets, SENTINELS, EOS), tokens)
  assert abs(noise_total / tokens_total - 0.15) <= 0.01
  assert abs(noise_total / spans_total - 3.0) <= 0.2


def test_span_corruption_round_trip_varied_settings():
  rng = np.random.default_rng(7)
  for seed in range(300):
    length = int(rng.integers(2, 80))
    density = float(rng.uniform(0.05, 0.6))
    mean_span = float(rng.uniform(1.0, 5.0))
    tokens = rng.integers(2, 500, size=length)
    tokens[-1] = EOS if seed % 3 == 0 else tokens[-1]  # an eos already at the end survives too
    inputs, targets = span_corruption(tokens, np.random.default_rng(seed), noise_density=density,
                                      mean_span_length=mean_span, sentinel_ids=SENTINELS, eos_id=EOS)
    np.testing.assert_array_equal(reassemble_span_corruption(inputs, targets, SENTINELS, EOS), tokens)


def test_span_corruption_is_reproducible_per_seed():
  tokens = np.arange(10, 210)
  a = span_corruption(tokens, np.random.default_rng(5), sentinel_ids=SENTINELS, eos_id=EOS)
  b = span_corruption(tokens, np.random.default_rng(5), sentinel_ids=SENTINELS, eos_id=EOS)
  c = span_corruption(tokens, np.random.default_rng(6), sentinel_ids=SENTINELS, eos_id=EOS)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])


def test_span_corruption_errors():
  # 200 tokens -> 30 noise tokens -> 10 spans: 9 sentinels are not enough.
  with pytest.raises(ValueError, match=r"10 noise spans .* only 9 sentinel_ids"):
    span_corruption(np.arange(10, 210), np.random.default_rng(0), sentinel_ids=SENTINELS[:9], eos_id=EOS)
  span_corruption(np.arange(10, 210), np.random.default_rng(0), sentinel_ids=SENTINELS[:10], eos_id=EOS)
  with pytest.raises(ValueError, match="at least 2 tokens"):
    span_corruption([5], np.random.default_rng(0), sentinel_ids=SENTINELS, eos_id=EOS)


def test_reassemble_rejects_inconsistent_pairs():
  with pytest.raises(ValueError, match="eos"):
    reassemble_span_corruption([11, S0], [S0, 12, EOS], SENTINELS, EOS)
  with pytest.raises(ValueError, match="not in targets"):
    reassemble_span_corruption([11, S0, 13, S1, EOS], [S0, 12, EOS], SENTINELS, EOS)
  with pytest.raises(ValueError, match="not in inputs"):
    reassemble_span_corruption([11, S0, EOS], [S0, 12, S1, 14, EOS], SENTINELS, EOS)
  with pytest.raises(ValueError, match="start with a sentinel"):
    reassemble_span_corruption([11, S0, EOS], [12, S0, 13, EOS], SENTINELS, EOS)


# --- text_infilling -------------------------------------------------------------------------------

def _reinsert(noisy, spans, original):
  """Rebuilds the original from the noisy sequence: each mask, in order, takes the next recorded span;
  checks that every mask sits exactly where its span starts."""
  out = []
  events = iter(spans.tolist())
  for token in noisy.tolist():
    if token == MASK:
      start, length = next(events)
      assert start == len(out)
      out.extend(original[start:start + length])
    else:
      out.append(token)
  assert next(events, None) is None
  return out


def test_infilling_statistics_and_round_trip():
  rng = np.random.default_rng(99)
  removed_total = tokens_total = 0
  all_lengths = []
  for seed in range(200):
    length = int(rng.integers(200, 600))
    tokens = rng.integers(5, 30000, size=length)
    noisy = text_infilling(tokens, np.random.default_rng(seed), mask_id=MASK)
    spans = infilling_spans(length, np.random.default_rng(seed))
    is_mask = noisy == MASK
    # What this implementation allows: every span and every 0-length insert sits in its own gap
    # between kept tokens, so two masks are never adjacent.
    assert not np.any(is_mask[1:] & is_mask[:-1])
    assert is_mask.sum() == len(spans)
    removed = length - int((~is_mask).sum())
    assert abs(removed - 0.3 * length) <= 0.5  # exactly round(0.3 * length) tokens masked
    removed_total, tokens_total = removed_total + removed, tokens_total + length
    all_lengths += spans[:, 1].tolist()
    assert np.all(np.diff(spans[:, 0]) > 0)  # sorted, no two in one place
    assert np.all(spans[:-1, 0] + spans[:-1, 1] < spans[1:, 0])  # a kept token between any two
    assert _reinsert(noisy, spans, tokens.tolist()) == tokens.tolist()
  assert abs(removed_total / tokens_total - 0.3) <= 0.005

  # Span lengths follow Poisson(3): mean 3 and the pmf, 0-length inserts included (only the last
  # span of each sequence is cut short, a small bias with ~40+ spans per sequence).
  lengths = np.array(all_lengths)
  assert abs(lengths.mean() - 3.0) <= 0.1
  for k in range(8):
    pmf = math.exp(-3.0) * 3.0 ** k / math.factorial(k)
    assert abs(np.mean(lengths == k) - pmf) <= 0.015, (k, np.mean(lengths == k), pmf)


def test_infilling_single_token_span_lands_anywhere_uniformly():
  # 3 tokens at ratio 1/3 -> one masked token; with lambda = 50 no draw is ever 0 (p = e^-50), so
  # the output is one of the three single replacements, each with probability 1/3.
  outputs = collections.Counter(
      tuple(text_infilling([21, 22, 23], np.random.default_rng(seed), mask_id=MASK, mask_ratio=1 / 3,
                           poisson_lambda=50.0).tolist()) for seed in range(600))
  assert set(outputs) == {(MASK, 22, 23), (21, MASK, 23), (21, 22, MASK)}
  assert all(abs(c - 200) < 60 for c in outputs.values()), outputs


def test_infilling_inserts_fill_free_gaps_at_most_once():
  # lambda = 0.01: a draw is 0 with p = 0.99, so ~100 inserts are drawn before the one 1-length span
  # (fewer than 2 with p ~ 2%); 2 kept tokens leave 3 gaps, the span takes one and
  # inserts fill the other two, never two in one gap.
  outputs = collections.Counter(
      tuple(text_infilling([21, 22, 23], np.random.default_rng(seed), mask_id=MASK, mask_ratio=1 / 3,
                           poisson_lambda=0.01).tolist()) for seed in range(300))
  full = {(MASK, 22, MASK, 23, MASK), (MASK, 21, MASK, 23, MASK), (MASK, 21, MASK, 22, MASK)}
  assert full <= set(outputs)
  assert sum(outputs[o] for o in full) >= 270, outputs
  for out in outputs:
    assert not any(a == b == MASK for a, b in zip(out, out[1:])), out
    assert len(out) - out.count(MASK) == 2
  spans = infilling_spans(3, np.random.default_rng(0), mask_ratio=1 / 3, poisson_lambda=0.01)
  assert sorted(spans[:, 1].tolist()) == [0, 0, 1]


def test_infilling_edge_ratios():
  tokens = [11, 12, 13, 14, 15]
  np.testing.assert_array_equal(text_infilling(tokens, np.random.default_rng(0), mask_id=MASK, mask_ratio=0.0),
                                tokens)
  assert infilling_spans(5, np.random.default_rng(0), mask_ratio=0.0).shape == (0, 2)
  # Everything masked: one gap, so all spans merge into one mask.
  np.testing.assert_array_equal(text_infilling(tokens, np.random.default_rng(0), mask_id=MASK, mask_ratio=1.0),
                                [MASK])
  assert text_infilling([], np.random.default_rng(0), mask_id=MASK).size == 0
  with pytest.raises(ValueError, match="poisson_lambda"):
    text_infilling(tokens, np.random.default_rng(0), mask_id=MASK, poisson_lambda=0.0)
  with pytest.raises(ValueError, match="mask_ratio"):
    text_infilling(tokens, np.random.default_rng(0), mask_id=MASK, mask_ratio=1.5)


def test_infilling_high_ratio_merges_spans_but_keeps_count():
  rng = np.random.default_rng(3)
  for seed in range(100):
    tokens = rng.integers(5, 1000, size=20).tolist()
    noisy = text_infilling(tokens, np.random.default_rng(seed), mask_id=MASK, mask_ratio=0.9, poisson_lambda=1.0)
    spans = infilling_spans(20, np.random.default_rng(seed), mask_ratio=0.9, poisson_lambda=1.0)
    is_mask = noisy == MASK
    assert (~is_mask).sum() == 2  # 18 of 20 masked
    assert not np.any(is_mask[1:] & is_mask[:-1])
    assert _reinsert(noisy, spans, tokens) == tokens


# --- permute_sentences ----------------------------------------------------------------------------

def test_permute_sentences_keeps_sentences_and_is_uniform():
  sentences = [[101, 102], [201], [301, 302, 303]]
  perms = collections.Counter()
  for seed in range(600):
    out = permute_sentences(sentences, np.random.default_rng(seed))
    assert out.dtype == np.int32
    # Ids encode their sentence (id // 100), so the output splits back into whole sentences.
    pieces = [list(g) for _, g in itertools.groupby(out.tolist(), key=lambda t: t // 100)]
    assert sorted(pieces) == sorted(sentences)
    perms[tuple(p[0] // 100 for p in pieces)] += 1
  assert set(perms) == set(itertools.permutations((1, 2, 3)))
  assert all(abs(c - 100) < 45 for c in perms.values()), perms


def test_permute_sentences_edge_cases():
  assert permute_sentences([], np.random.default_rng(0)).size == 0
  np.testing.assert_array_equal(permute_sentences([[5, 6, 7]], np.random.default_rng(0)), [5, 6, 7])
  out = permute_sentences([[1], [], [2, 2]], np.random.default_rng(0))
  assert sorted(out.tolist()) == [1, 2, 2]
