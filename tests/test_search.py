"""Greedy, sampled and beam-search decoding against toy step functions and plain-Python references.

The toy models: a bigram table (logits depend only on the fed token) and a history model whose logits
depend on every token fed so far, through a [B, T] history kept in the cache, so a cache row that is
reordered wrongly during beam search changes the scores. Both carry a position counter in the cache and
return NaN logits for any row whose counter disagrees with `index`.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm import search

NEG = -np.inf


def bigram_step(table_VV):
  """step_fn with logits = table[fed token]."""
  table = jnp.asarray(table_VV, jnp.float32)

  def step(cache, tokens_B, index):
    ok_B1 = (cache["pos"] == index)[:, None]
    return jnp.where(ok_B1, table[tokens_B], jnp.nan), {**cache, "pos": cache["pos"] + 1}
  return step


def history_key(seq, modulus):
  """The history model's table row for the tokens fed so far: sum_j (j + 1) * token_j mod modulus."""
  return sum((j + 1) * int(t) for j, t in enumerate(seq)) % modulus


def history_step(table_MV, max_length):
  """step_fn with logits = table[history_key(all tokens fed so far)]; the history lives in the cache."""
  table = jnp.asarray(table_MV, jnp.float32)
  weights_T = jnp.arange(1, max_length + 1)

  def step(cache, tokens_B, index):
    hist_BT = cache["hist"].at[:, index].set(tokens_B)
    logits_BV = table[(hist_BT * weights_T).sum(-1) % table.shape[0]]
    ok_B1 = (cache["pos"] == index)[:, None]
    return jnp.where(ok_B1, logits_BV, jnp.nan), {"hist": hist_BT, "pos": cache["pos"] + 1}
  return step


def init_cache(batch, max_length):
  return {"hist": jnp.zeros((batch, max_length), jnp.int32), "pos": jnp.zeros((batch,), jnp.int32)}


@functools.lru_cache(maxsize=None)
def _jitted(kind, model, max_length, options):
  """One compiled search per (model kind, options); table and rng are arguments so seeds share it."""
  make_step = {"bigram": bigram_step, "history": lambda t: history_step(t, max_length)}[model]
  fn = {"generate": search.generate, "beam": search.beam_search}[kind]

  def run(table, cache, prompt_BL, lengths_B, rng):
    extra = {} if rng is None else {"rng": rng}
    return fn(make_step(table), cache, prompt_BL, lengths_B, max_length, **dict(options), **extra)
  return jax.jit(run)


def run_search(kind, model, table, prompts, max_length, rng=None, **options):
  """Runs generate or beam_search under jit on ragged prompts (lists of token ids)."""
  batch, width = len(prompts), max(len(p) for p in prompts)
  # Filler after each prompt is a real token id, so a search that read it would show.
  prompt_BL = np.full((batch, width), 2, np.int32)
  for b, p in enumerate(prompts):
    prompt_BL[b, :len(p)] = p
  fn = _jitted(kind, model, max_length, tuple(sorted(options.items())))
  out = fn(jnp.asarray(table, jnp.float32), init_cache(batch, max_length), jnp.asarray(prompt_BL),
           jnp.asarray([len(p) for p in prompts], jnp.int32), rng)
  return tuple(np.asarray(x) for x in out)


def log_softmax(x):
  x = np.asarray(x, np.float64)
  finite = x[np.isfinite(x)]
  z = x - finite.max()
  return z - np.log(np.exp(z).sum())


def history_logp(table):
  return lambda seq: log_softmax(table[history_key(seq, table.shape[0])])


def bigram_logp(table):
  return lambda seq: log_softmax(table[seq[-1]])


def ref_greedy(logp_fn, prompt, max_length, eos_id, pad_id):
  """Plain-Python greedy decoding: (padded tokens, length, sum of generated log-probs)."""
  seq, total = list(prompt), 0.0
  while len(seq) < max_length:
    logp = logp_fn(seq)
    token = int(np.argmax(logp))
    seq.append(token)
    total += logp[token]
    if token == eos_id:
      break
  return seq + [pad_id] * (max_length - len(seq)), len(seq), total


def ref_score(logp_fn, prompt, generated, length_penalty):
  """Beam score of a continuation: sum of its log-probs / (generated length ** length_penalty)."""
  seq, total = list(prompt), 0.0
  for token in generated:
    total += logp_fn(seq)[token]
    seq.append(token)
  return total / len(generated) ** length_penalty


def ref_all_continuations(prompt, max_length, eos_id, tokens):
  """Every continuation that ends at eos or at max_length, by brute-force enumeration."""
  out = []
  for n in range(1, max_length - len(prompt) + 1):
    for gen in itertools.product(tokens, repeat=n):
      ends_early = eos_id in gen[:-1]
      ends_right = gen[-1] == eos_id or len(prompt) + n == max_length
      if not ends_early and ends_right:
        out.append(list(gen))
  return out


def random_table(rng, rows, vocab, eos_id, pad_id, eos_bias=0.0, scale=2.0):
  table = rng.normal(size=(rows, vocab)).astype(np.float32) * scale
  table[:, eos_id] += eos_bias
  table[:, pad_id] = NEG  # pad is never generated, so every generated token is a real choice
  return table


# ----- greedy and sampling -----


def test_greedy_matches_reference_on_ragged_prompts():
  """Rows with different prompt lengths decode as a plain greedy loop does, and as each row alone."""
  eos, pad, T = 1, 0, 8
  prompts = [[3], [4, 2, 3], [2, 4]]
  ended = 0
  for seed in range(3):
    table = random_table(np.random.default_rng(seed), 7, 5, eos, pad, eos_bias=-1.0)
    tokens, lengths = run_search("generate", "history", table, prompts, T, eos_id=eos, pad_id=pad)
    for b, prompt in enumerate(prompts):
      want, want_len, _ = ref_greedy(history_logp(table), prompt, T, eos, pad)
      np.testing.assert_array_equal(tokens[b], want)
      assert lengths[b] == want_len
      ended += want_len < T
      alone, alone_len = run_search("generate", "history", table, [prompt], T, eos_id=eos, pad_id=pad)
      np.testing.assert_array_equal(alone[0], tokens[b])
      assert alone_len[0] == lengths[b]
  assert 0 < ended < 9  # both rows that stop at eos and rows that run to max_length were seen


def test_eos_padding_and_early_stop():
  """Padding follows the first generated eos; an eos inside the prompt does not end the row; the loop stops early."""
  eos, pad, T, V = 1, 0, 10, 6
  # Deterministic chain: 2 -> 3 -> eos; 5 -> 5 forever; anything else -> 2.
  table = np.full((V, V), -5.0, np.float32)
  table[:, 2] = 5.0
  table[2] = -5.0
  table[2, 3] = 5.0
  table[3] = -5.0
  table[3, eos] = 5.0
  calls = []

  def recording_step(cache, tokens_B, index):
    jax.debug.callback(lambda i: calls.append(int(i)), index)
    return bigram_step(table)(cache, tokens_B, index)

  prompt_BL = jnp.asarray([[2, 0, 0], [4, eos, 4]], jnp.int32)
  cache = {"pos": jnp.zeros((2,), jnp.int32)}
  fn = jax.jit(lambda c, p, n: search.generate(recording_step, c, p, n, T, eos_id=eos, pad_id=pad))
  tokens, lengths = fn(cache, prompt_BL, jnp.asarray([1, 3], jnp.int32))
  jax.effects_barrier()
  np.testing.assert_array_equal(tokens, [[2, 3, eos, pad, pad, pad, pad, pad, pad, pad],
                                         [4, eos, 4, 2, 3, eos, pad, pad, pad, pad]])
  np.testing.assert_array_equal(lengths, [3, 6])
  # Row 1 emits its eos at position 5, from the step that fed position 4: steps 0..4, then stop.
  assert sorted(calls) == [0, 1, 2, 3, 4]

  # A row that never ends runs to max_length with nothing padded; a prompt that fills T is left as is.
  table[5] = -5.0
  table[5, 5] = 5.0
  tokens, lengths = run_search("generate", "bigram", table, [[5], [2] * T], T, eos_id=eos, pad_id=pad)
  np.testing.assert_array_equal(tokens, [[5] * T, [2] * T])
  np.testing.assert_array_equal(lengths, [T, T])


def test_top_k_one_and_tiny_top_p_and_low_temperature_equal_greedy():
  """Sampling with top_k=1, with a nucleus of one token, or at temperature 1e-3 always picks the argmax."""
  eos, pad, T = 1, 0, 7
  prompts = [[3], [4, 2], [2, 3, 4]]
  for seed in range(2):
    table = random_table(np.random.default_rng(10 + seed), 7, 6, eos, pad, eos_bias=0.3)
    greedy, greedy_len = run_search("generate", "history", table, prompts, T, eos_id=eos, pad_id=pad)
    for key, options in [(0, dict(top_k=1)), (1, dict(top_k=1, temperature=3.0)), (2, dict(top_p=1e-6)),
                         (3, dict(temperature=1e-3))]:
      tokens, lengths = run_search("generate", "history", table, prompts, T, eos_id=eos, pad_id=pad,
                                   method="sample", rng=jax.random.key(key), **options)
      np.testing.assert_array_equal(tokens, greedy, err_msg=str(options))
      np.testing.assert_array_equal(lengths, greedy_len)


def nucleus_reference(logits, temperature, top_k, top_p):
  """The distribution sampling should follow, worked in NumPy: softmax(l/t), top-k, renormalise, nucleus."""
  p = np.exp(log_softmax(np.asarray(logits, np.float64) / temperature))
  order = np.argsort(-p)
  keep = np.zeros(len(p), bool)
  keep[order[:top_k or len(p)]] = True
  p = np.where(keep, p, 0.0) / p[keep].sum()
  kept, mass = [], 0.0
  for token in np.argsort(-p):
    if mass >= top_p:
      break
    kept.append(token)
    mass += p[token]
  out = np.zeros_like(p)
  out[kept] = p[kept] / p[kept].sum()
  return out


# Token probabilities 0.10 .40 .04 .25 .06 .15; by rank .40 .25 .15 .10 .06 .04 (cumulative .40 .65 .80 .90 .96 1).
ONE_STEP_PROBS = np.array([0.10, 0.40, 0.04, 0.25, 0.06, 0.15])


@pytest.mark.parametrize("temperature,top_k,top_p,support", [
    (1.0, 0, 1.0, 6),
    (0.5, 0, 1.0, 6),
    (1.0, 3, 1.0, 3),
    (1.0, 0, 0.7, 3),   # .40 + .25 = .65 < .7, so .15 joins: three tokens
    (1.0, 0, 0.3, 1),   # the top token alone already reaches .3
    (0.5, 0, 0.7, 2),   # temperature first: p**2 renormalised is .615 .240 ...: two tokens reach .7
    (2.0, 4, 0.8, 3),   # temperature flattens first: see nucleus_reference
])
def test_sampling_frequencies_match_filtered_distribution(temperature, top_k, top_p, support):
  """Empirical one-step frequencies match the renormalised filtered distribution; filtered tokens never appear."""
  n, eos, pad = 20000, 0, 2
  logits = np.log(ONE_STEP_PROBS).astype(np.float32)
  table = np.tile(logits, (6, 1))
  want = nucleus_reference(logits, temperature, top_k, top_p)
  assert (want > 0).sum() == support
  tokens, _ = run_search("generate", "bigram", table, [[3]] * n, 2, eos_id=eos, pad_id=pad, method="sample",
                         rng=jax.random.key(7), temperature=temperature, top_k=top_k, top_p=top_p)
  counts = np.bincount(tokens[:, 1], minlength=6)
  assert counts[want == 0].sum() == 0
  # Each count within 5 standard deviations of its binomial mean, and a chi-square test at p = 0.001.
  expected = n * want[want > 0]
  observed = counts[want > 0]
  np.testing.assert_array_less(np.abs(observed - expected), 5 * np.sqrt(expected * (1 - want[want > 0])) + 1e-9)
  chi2 = ((observed - expected) ** 2 / expected).sum()
  critical = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46}[support]
  assert support == 1 or chi2 < critical, chi2


def test_sampling_keys_differ_per_position_and_are_reproducible():
  """The same rng repeats a draw exactly; positions draw with different keys (not one token repeated)."""
  table = np.zeros((4, 4), np.float32)
  kwargs = dict(eos_id=0, pad_id=1, method="sample")
  table[:, :2] = NEG  # never eos or pad: every row runs to the end
  a, _ = run_search("generate", "bigram", table, [[2]] * 64, 6, rng=jax.random.key(1), **kwargs)
  b, _ = run_search("generate", "bigram", table, [[2]] * 64, 6, rng=jax.random.key(1), **kwargs)
  c, _ = run_search("generate", "bigram", table, [[2]] * 64, 6, rng=jax.random.key(2), **kwargs)
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
  assert (a[:, 1] != a[:, 2]).any() and (a[:, 1:] != a[:1, 1:]).any()  # across positions and across rows


def test_generate_rejects_bad_options():
  step, cache = bigram_step(np.zeros((3, 3))), {"pos": jnp.zeros((1,), jnp.int32)}
  prompt, lens = jnp.ones((1, 2), jnp.int32), [2]
  with pytest.raises(ValueError, match="method"):
    search.generate(step, cache, prompt, lens, 4, eos_id=0, pad_id=0, method="beam")
  with pytest.raises(ValueError, match="rng"):
    search.generate(step, cache, prompt, lens, 4, eos_id=0, pad_id=0, method="sample")
  with pytest.raises(ValueError, match="max_length"):
    search.generate(step, cache, prompt, lens, 1, eos_id=0, pad_id=0)
  with pytest.raises(ValueError, match="top_p"):
    search.generate(step, cache, prompt, lens, 4, eos_id=0, pad_id=0, method="sample", rng=jax.random.key(0),
                    top_p=0.0)


# ----- beam search -----


def test_beam_search_with_one_beam_is_greedy():
  """num_beams=1 with length_penalty 0 gives the greedy sequence, scored by its total log-probability.

  (With a positive length penalty one beam may rightly keep going past a greedy eos: a longer
  continuation can score better once divided by its length.)
  """
  eos, pad, T = 1, 0, 8
  prompts = [[2], [3, 4], [4]]
  ended = 0
  for seed in range(4):
    table = random_table(np.random.default_rng(20 + seed), 6, 6, eos, pad, eos_bias=0.8)
    tokens, scores = run_search("beam", "bigram", table, prompts, T, num_beams=1, eos_id=eos, pad_id=pad,
                                length_penalty=0.0)
    greedy, _ = run_search("generate", "bigram", table, prompts, T, eos_id=eos, pad_id=pad)
    np.testing.assert_array_equal(tokens, greedy)
    for b, prompt in enumerate(prompts):
      want, want_len, want_logp = ref_greedy(bigram_logp(table), prompt, T, eos, pad)
      np.testing.assert_array_equal(tokens[b], want)
      np.testing.assert_allclose(scores[b], want_logp, rtol=1e-5)
      ended += want_len < T
  assert 0 < ended < 12


def test_hand_worked_beam_search_differs_from_greedy():
  """Two beams over a bigram table, traced by hand, for length_penalty 0 and 1; greedy picks a third sequence.

  Tokens: 0 eos, 1 a, 2 b, 3 BOS, 4 pad; max_length 4 (BOS + 3 generated). Next-token probabilities:
    after BOS: eos .35  a .40  b .25
    after a:   eos .20  a .50  b .30
    after b:   eos .90  a .05  b .05
  Greedy: BOS a a a (.40, .50, .50; never eos).
  Beam, K=2, candidates = top 4:
    step 1: a .40, eos .35, b .25 -> finished {eos .35}; alive {a .40, b .25}
    step 2: b eos .225, a a .20, a b .12, a eos .08
            -> alive {a a .20, a b .12}; finished adds b eos .225 (a eos ranks 4th: only eos among the
               K best candidates of a step may finish, as in Hugging Face)
      penalty 0: finished {eos log .35 = -1.0498, b eos log .225 = -1.4917}; best alive log .20 = -1.609
                 cannot beat the worst finished: stop after two steps. Best: BOS eos, score log .35.
      penalty 1: finished {b eos -1.4917/2 = -0.7458, eos -1.0498/1}; alive a a could still reach
                 log(.20)/3 = -0.536: go on.
    step 3 (last; the alive ones are finalised too, all with length 3):
            a b eos .108 -> log(.108)/3 = -0.7419; a a a .10 -> -0.7675; a a b .06 -> -0.9378
      penalty 1: best of {-0.7419, -0.7458, -1.0498, ...}: BOS a b eos, score log(.108)/3.
  """
  eos, a, b, bos, pad = 0, 1, 2, 3, 4
  probs = np.zeros((5, 5))
  probs[bos, [eos, a, b]] = [0.35, 0.40, 0.25]
  probs[a, [eos, a, b]] = [0.20, 0.50, 0.30]
  probs[b, [eos, a, b]] = [0.90, 0.05, 0.05]
  probs[eos, [eos, a, b]] = probs[pad, [eos, a, b]] = 1 / 3
  with np.errstate(divide="ignore"):
    table = np.log(probs).astype(np.float32)

  greedy, lengths = run_search("generate", "bigram", table, [[bos]], 4, eos_id=eos, pad_id=pad)
  np.testing.assert_array_equal(greedy, [[bos, a, a, a]])
  assert lengths[0] == 4

  def beam(length_penalty):
    calls = []

    def recording_step(cache, tokens_B, index):
      jax.debug.callback(lambda i: calls.append(int(i)), index)
      return bigram_step(table)(cache, tokens_B, index)
    tokens, scores = jax.jit(lambda c: search.beam_search(
        recording_step, c, jnp.asarray([[bos]], jnp.int32), jnp.asarray([1], jnp.int32), 4, num_beams=2,
        eos_id=eos, pad_id=pad, length_penalty=length_penalty))({"pos": jnp.zeros((1,), jnp.int32)})
    jax.effects_barrier()
    return np.asarray(tokens), np.asarray(scores), sorted(calls)

  tokens, scores, calls = beam(0.0)
  np.testing.assert_array_equal(tokens, [[bos, eos, pad, pad]])
  np.testing.assert_allclose(scores, [np.log(0.35)], rtol=1e-6)
  assert calls == [0, 1]  # early stop
  tokens, scores, calls = beam(1.0)
  np.testing.assert_array_equal(tokens, [[bos, a, b, eos]])
  np.testing.assert_allclose(scores, [np.log(0.40 * 0.30 * 0.90) / 3], rtol=1e-6)
  assert calls == [0, 1, 2]


def test_positive_length_penalty_carries_one_beam_past_greedy_eos():
  """One beam, traced by hand: with length_penalty 1 the early-stop bound must use the longest length.

  Tokens: 0 eos, 1 a, 2 b, 3 BOS, 4 pad; max_length 6 (BOS + 5 generated). Next-token probabilities:
    after BOS: eos .60  a .15  b .25;   after b: b .95  eos .04  a .01;   after a: eos .5  a .25  b .25
  Step 1: top 2 = eos .60 (rank 0: finishes, score log .6 = -0.511), b .25 (alive).
    penalty 0: the alive b (log .25 = -1.386) cannot beat -0.511: stop; BOS eos, as greedy.
    penalty 1: b could still reach log(.25)/5 = -0.277 at length 5: go on (a bound at the next length,
      log(.25)/2 = -0.693, would wrongly stop here).
  Steps 2-5: top 2 = b, eos (rank 1: not kept). At max_length BOS b b b b b is finalised:
    (log .25 + 4 log .95)/5 = -0.318 > -0.511, so it wins.
  """
  eos, a, b, bos, pad = 0, 1, 2, 3, 4
  probs = np.zeros((5, 5))
  probs[bos, [eos, a, b]] = [0.60, 0.15, 0.25]
  probs[b, [eos, a, b]] = [0.04, 0.01, 0.95]
  probs[[a, eos, pad], :3] = [0.5, 0.25, 0.25]
  with np.errstate(divide="ignore"):
    table = np.log(probs).astype(np.float32)
  tokens, scores = run_search("beam", "bigram", table, [[bos]], 6, num_beams=1, eos_id=eos, pad_id=pad,
                              length_penalty=0.0)
  np.testing.assert_array_equal(tokens, [[bos, eos, pad, pad, pad, pad]])
  np.testing.assert_allclose(scores, [np.log(0.6)], rtol=1e-6)
  tokens, scores = run_search("beam", "bigram", table, [[bos]], 6, num_beams=1, eos_id=eos, pad_id=pad,
                              length_penalty=1.0)
  np.testing.assert_array_equal(tokens, [[bos, b, b, b, b, b]])
  np.testing.assert_allclose(scores, [(np.log(0.25) + 4 * np.log(0.95)) / 5], rtol=1e-6)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0, -0.5])
def test_beam_search_with_history_model_matches_brute_force(length_penalty):
  """Logits depend on the whole history held in the cache; wide beams equal exhaustive search, narrow ones score truly.

  Vocab: 0 pad (never generated), 1 eos, 2, 3. With 48 beams every candidate ranks among the K best
  (at most 16 alive prefixes before the last step, so at most 48 finite candidates): beam search is
  then exhaustive, and must find the exact best, early stop included.
  With 2 beams the result may be worse, but its score must be the true score of its sequence: a cache
  row reordered wrongly would feed the wrong history.
  """
  eos, pad, T = 1, 0, 6
  prompts = [[2], [3, 2], [2, 2, 3]]
  narrow_worse = 0
  for seed in range(3):
    # Flat logits: narrow beams then often miss the best sequence.
    table = random_table(np.random.default_rng(30 + seed), 11, 4, eos, pad, scale=0.7)
    logp_fn = history_logp(table)
    wide, wide_scores = run_search("beam", "history", table, prompts, T, num_beams=48, eos_id=eos, pad_id=pad,
                                   length_penalty=length_penalty)
    narrow, narrow_scores = run_search("beam", "history", table, prompts, T, num_beams=2, eos_id=eos, pad_id=pad,
                                       length_penalty=length_penalty)
    for b, prompt in enumerate(prompts):
      scored = sorted(((ref_score(logp_fn, prompt, gen, length_penalty), gen)
                       for gen in ref_all_continuations(prompt, T, eos, [1, 2, 3])), reverse=True)
      (best_score, best_gen), (second_score, _) = scored[0], scored[1]
      np.testing.assert_allclose(wide_scores[b], best_score, rtol=1e-5)
      if best_score - second_score > 1e-4:
        want = prompt + best_gen + [pad] * (T - len(prompt) - len(best_gen))
        np.testing.assert_array_equal(wide[b], want)
      gen = [int(t) for t in narrow[b, len(prompt):]]
      gen = gen[:gen.index(eos) + 1] if eos in gen else gen
      assert all(t == pad for t in narrow[b, len(prompt) + len(gen):])
      np.testing.assert_array_equal(narrow[b, :len(prompt)], prompt)
      np.testing.assert_allclose(narrow_scores[b], ref_score(logp_fn, prompt, gen, length_penalty), rtol=1e-5)
      assert narrow_scores[b] <= best_score + 1e-5
      narrow_worse += narrow_scores[b] < best_score - 1e-5
  if length_penalty == 0.0:
    assert narrow_worse > 0  # the narrow beam really pruned something on these tables


def ref_beam_search(logp_fn, prompt, max_length, num_beams, eos_id, length_penalty):
  """Plain-Python beam search run to max_length (no early stop): (best sequence, its score).

  Each step ranks every extension of the alive beams, keeps the 2K best, lets an eos among the K best
  finish, keeps the K best others alive, and finalises those at max_length.
  """
  alive, finished = [(0.0, list(prompt))], []
  while len(alive[0][1]) < max_length:
    cands = sorted(((logp + lp, seq + [t]) for logp, seq in alive
                    for t, lp in enumerate(logp_fn(seq)) if np.isfinite(lp)), key=lambda c: -c[0])
    cands = cands[:2 * num_beams]
    gen_len = len(cands[0][1]) - len(prompt)
    finished += [(logp / gen_len ** length_penalty, seq) for rank, (logp, seq) in enumerate(cands)
                 if seq[-1] == eos_id and rank < num_beams]
    alive = [c for c in cands if c[1][-1] != eos_id][:num_beams]
    if len(alive[0][1]) == max_length:
      finished += [(logp / gen_len ** length_penalty, seq) for logp, seq in alive]
  score, seq = max(finished, key=lambda f: f[0])
  return seq, score


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0, -0.5])
def test_beam_search_matches_plain_python_beam_search(length_penalty):
  """Narrow beams with early stop give what a plain beam search run to max_length gives: the stop is exact."""
  eos, pad, T = 1, 0, 8
  prompts = [[2], [3, 2, 3], [2, 3]]
  for num_beams in (2, 3):
    for seed in range(2):
      table = random_table(np.random.default_rng(50 + seed), 13, 5, eos, pad, scale=0.7)
      tokens, scores = run_search("beam", "history", table, prompts, T, num_beams=num_beams, eos_id=eos,
                                  pad_id=pad, length_penalty=length_penalty)
      for b, prompt in enumerate(prompts):
        seq, score = ref_beam_search(history_logp(table), prompt, T, num_beams, eos, length_penalty)
        np.testing.assert_array_equal(tokens[b], seq + [pad] * (T - len(seq)))
        np.testing.assert_allclose(scores[b], score, rtol=1e-5)


def test_beam_search_ragged_prompts_match_rows_alone():
  """A batch of prompts with different lengths gives each row the result it gets alone."""
  eos, pad, T = 1, 0, 7
  prompts = [[2], [3, 4, 2], [4, 3]]
  table = random_table(np.random.default_rng(40), 9, 5, eos, pad)
  tokens, scores = run_search("beam", "history", table, prompts, T, num_beams=3, eos_id=eos, pad_id=pad)
  for b, prompt in enumerate(prompts):
    alone, alone_score = run_search("beam", "history", table, [prompt], T, num_beams=3, eos_id=eos, pad_id=pad)
    np.testing.assert_array_equal(alone[0], tokens[b])
    np.testing.assert_allclose(alone_score[0], scores[b], rtol=1e-6)


def test_repeat_cache_keeps_each_rows_copies_together():
  cache = {"k": jnp.arange(6).reshape(2, 3), "n": jnp.asarray([7, 8])}
  out = search.repeat_cache(cache, 3)
  np.testing.assert_array_equal(out["k"], [[0, 1, 2]] * 3 + [[3, 4, 5]] * 3)
  np.testing.assert_array_equal(out["n"], [7, 7, 7, 8, 8, 8])
