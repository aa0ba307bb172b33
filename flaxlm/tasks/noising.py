"""Host-side denoising corruptions for encoder-decoder pretraining: T5 span corruption, BART text
infilling and sentence permutation.

These run in the data pipeline on one example at a time (NumPy, token-id lists in, int32 arrays out).
Every function takes a `np.random.Generator` and draws only from it, so a pipeline that seeds one
generator per example (e.g. from (seed, example index)) gets the same corruption after a resume.

Token ids should not already contain the sentinel / mask ids (not checked, to keep the per-example
cost low): such a token would read as a corruption, and `reassemble_span_corruption` would misparse it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

TokenIds = Sequence[int] | np.ndarray


def _as_ids(tokens: TokenIds) -> np.ndarray:
  ids = np.asarray(tokens)
  if ids.ndim != 1:
    raise ValueError(f"expected a 1-D sequence of token ids, got shape {ids.shape}")
  if ids.size and not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"expected integer token ids, got dtype {ids.dtype}")
  return ids.astype(np.int32)


def _random_segment_lengths(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """Lengths of a uniformly random split of `num_items` in a row into `num_segments` non-empty parts."""
  # Each composition corresponds to one set of (num_segments - 1) cut points among the
  # (num_items - 1) gaps, so cut points drawn without replacement make every split equally likely.
  cuts = np.sort(rng.choice(num_items - 1, num_segments - 1, replace=False)) + 1
  return np.diff(np.concatenate([[0], cuts, [num_items]])).astype(np.int64)


def _noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
  """(noise tokens, noise spans) for a sequence of `length`; deterministic, so errors need no draw."""
  if length < 2:
    raise ValueError(f"span noise needs a sequence of at least 2 tokens (one kept, one noise), got {length}")
  if not 0.0 < noise_density < 1.0:
    raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
  if mean_noise_span_length <= 0:
    raise ValueError(f"mean_noise_span_length must be > 0, got {mean_noise_span_length}")
  num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
  num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
  # Each span needs a token of its own and a kept token before it; T5's recipe never gets here
  # with its settings, but e.g. density 0.8 with span length 1 would ask for more.
  num_spans = min(num_spans, num_noise, length - num_noise)
  return num_noise, num_spans


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
  """T5's noise mask: bool[length], True on noise tokens, in alternating kept/noise runs."""
  num_noise, num_spans = _noise_counts(length, noise_density, mean_noise_span_length)
  noise_lengths = _random_segment_lengths(num_noise, num_spans, rng)
  kept_lengths = _random_segment_lengths(length - num_noise, num_spans, rng)
  # Runs: kept_0, noise_0, kept_1, noise_1, ...: starts with kept tokens and ends with noise.
  run_lengths = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)
  return np.repeat(np.tile([False, True], num_spans), run_lengths)


def span_corruption(tokens: TokenIds, rng: np.random.Generator, *, noise_density: float = 0.15,
                    mean_span_length: float = 3.0, sentinel_ids: Sequence[int],
                    eos_id: int) -> tuple[np.ndarray, np.ndarray]:
  """T5 span corruption: (inputs with one sentinel per noise span + eos, targets = sentinel + span ... + eos)."""
  ids = _as_ids(tokens)
  sentinels = np.asarray(sentinel_ids, np.int32).reshape(-1)
  _, num_spans = _noise_counts(len(ids), noise_density, mean_span_length)
  if num_spans > len(sentinels):
    raise ValueError(
        f"span_corruption: a {len(ids)}-token sequence gets {num_spans} noise spans (noise_density="
        f"{noise_density}, mean_span_length={mean_span_length}) but only {len(sentinels)} sentinel_ids "
        "were given; pass more sentinel_ids, shorter sequences or a longer mean_span_length")
  noise = random_spans_noise_mask(len(ids), noise_density, mean_span_length, rng)
  span_start = noise & ~np.concatenate([[False], noise[:-1]])
  # Sentinel k for every token of span k (span index = number of span starts so far, minus one).
  span_sentinel = sentinels[np.maximum(np.cumsum(span_start) - 1, 0)]

  eos = np.array([eos_id], np.int32)
  # Inputs: kept tokens, and at each span start its sentinel; the rest of the span is dropped.
  inputs_ids = np.where(span_start, span_sentinel, ids)[~noise | span_start]
  # Targets: each noise token, with its span's sentinel written in front of the span's first token.
  starts_in_noise = span_start[noise]
  copies = 1 + starts_in_noise.astype(np.int64)
  targets_ids = np.repeat(ids[noise], copies)
  first_copy = np.cumsum(copies) - copies
  targets_ids[first_copy[starts_in_noise]] = span_sentinel[noise][starts_in_noise]
  return np.concatenate([inputs_ids, eos]), np.concatenate([targets_ids, eos])


def reassemble_span_corruption(inputs: TokenIds, targets: TokenIds, sentinel_ids: Sequence[int],
                               eos_id: int) -> np.ndarray:
  """Inverse of `span_corruption`: the original tokens from (inputs, targets)."""
  inputs_ids, targets_ids = _as_ids(inputs), _as_ids(targets)
  for name, seq in (("inputs", inputs_ids), ("targets", targets_ids)):
    if not len(seq) or seq[-1] != eos_id:
      raise ValueError(f"reassemble_span_corruption: {name} do not end with eos_id={eos_id}")
  inputs_ids, targets_ids = inputs_ids[:-1], targets_ids[:-1]
  sentinel_set = {int(s) for s in sentinel_ids}

  spans: dict[int, list[int]] = {}
  current = None
  for token in targets_ids.tolist():
    if token in sentinel_set:
      if token in spans:
        raise ValueError(f"reassemble_span_corruption: sentinel {token} appears twice in targets")
      current = spans[token] = []
    elif current is None:
      raise ValueError("reassemble_span_corruption: targets must start with a sentinel")
    else:
      current.append(token)

  out: list[int] = []
  used = set()
  for token in inputs_ids.tolist():
    if token in sentinel_set:
      if token not in spans:
        raise ValueError(f"reassemble_span_corruption: sentinel {token} is in inputs but not in targets")
      used.add(token)
      out.extend(spans[token])
    else:
      out.append(token)
  if used != set(spans):
    raise ValueError(f"reassemble_span_corruption: sentinels {sorted(set(spans) - used)} are in targets "
                     "but not in inputs")
  return np.asarray(out, np.int32)


def infilling_spans(length: int, rng: np.random.Generator, *, mask_ratio: float = 0.3,
                    poisson_lambda: float = 3.0) -> np.ndarray:
  """BART infilling spans for a sequence of `length`: int[S, 2] of (start, span length), by start.

  `text_infilling(tokens, rng, ...)` draws exactly these spans from a generator in the same state.
  A span (s, n > 0) replaces tokens[s:s + n] by one mask; (s, 0) inserts a mask before tokens[s]
  (s == length: at the end). Exactly round(mask_ratio * length) tokens are masked. Every span and
  insert sits in its own gap between kept tokens, so the output never has two masks in a row;
  when there are more spans than gaps (very high mask_ratio) inserts are dropped first and then
  neighbouring spans merged, which keeps the masked count.
  """
  if not 0.0 <= mask_ratio <= 1.0:
    raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
  if poisson_lambda <= 0:
    raise ValueError(f"poisson_lambda must be > 0 (a span-length mean), got {poisson_lambda}")
  num_to_mask = int(round(length * mask_ratio))
  if num_to_mask == 0:
    return np.zeros((0, 2), np.int64)

  # Span lengths ~ Poisson(lambda), drawn until they cover num_to_mask; the last one is cut so
  # the total is exact. Zero-length draws become inserts, as in BART.
  chunk = min(int(np.ceil(num_to_mask / poisson_lambda)) + 8, 1 << 16)
  draws, total = [], 0
  while total < num_to_mask:
    draws.append(rng.poisson(poisson_lambda, size=chunk))
    total += int(draws[-1].sum())
  lengths = np.concatenate(draws)
  covered = np.cumsum(lengths)
  last = int(np.argmax(covered >= num_to_mask))
  lengths = lengths[:last + 1].astype(np.int64)
  lengths[last] = num_to_mask - (covered[last - 1] if last else 0)

  spans = lengths[lengths > 0]
  num_inserts = len(lengths) - len(spans)
  num_gaps = length - num_to_mask + 1  # before, between and after the kept tokens
  if len(spans) > num_gaps:
    group_sizes = _random_segment_lengths(len(spans), num_gaps, rng)
    spans = np.add.reduceat(spans, np.concatenate([[0], np.cumsum(group_sizes)[:-1]]))
  num_inserts = min(num_inserts, num_gaps - len(spans))

  events = rng.permutation(np.concatenate([spans, np.zeros(num_inserts, np.int64)]))
  gaps = np.sort(rng.choice(num_gaps, len(events), replace=False))
  # A gap index counts the kept tokens before it; add the masked tokens of earlier spans.
  starts = gaps + np.concatenate([[0], np.cumsum(events)[:-1]])
  return np.stack([starts, events], axis=1).astype(np.int64)


def text_infilling(tokens: TokenIds, rng: np.random.Generator, *, mask_id: int, mask_ratio: float = 0.3,
                   poisson_lambda: float = 3.0) -> np.ndarray:
  """BART text infilling: Poisson-length spans each become one `mask_id` (the target is `tokens`)."""
  ids = _as_ids(tokens)
  spans = infilling_spans(len(ids), rng, mask_ratio=mask_ratio, poisson_lambda=poisson_lambda)
  pieces, pos = [], 0
  mask = np.array([mask_id], np.int32)
  for start, span_length in spans.tolist():
    pieces += [ids[pos:start], mask]
    pos = start + span_length
  pieces.append(ids[pos:])
  return np.concatenate(pieces)


def permute_sentences(sentences: Sequence[TokenIds], rng: np.random.Generator) -> np.ndarray:
  """BART sentence permutation: the sentences concatenated in a uniformly random order."""
  order = rng.permutation(len(sentences))
  return np.concatenate([np.zeros(0, np.int32)] + [_as_ids(sentences[i]) for i in order])
