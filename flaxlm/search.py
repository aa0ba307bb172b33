"""Autoregressive search over a model's step function: greedy and sampled decoding, and beam search.

The model side is a step function

  step_fn(cache, tokens_B int32[B], index int32 scalar) -> (logits_BV float32, new_cache)

that feeds tokens_B at position `index` (the same position for every row) and returns the logits for
position index + 1. Every leaf of the cache has the batch as its leading axis, so search reorders or
expands rows with jnp.take / jnp.repeat on axis 0.

Everything here is a pure function with static shapes: one lax.while_loop over positions, no Python
loop per token. Wrap a call in jax.jit with step_fn, max_length and the keyword options closed over
(they are Python values that pick the graph) and it compiles once per shape.

Prompts are left-aligned: row b holds its prompt in prompt_BL[b, :prompt_lengths_B[b]] (at least one
token; an encoder-decoder passes its decoder start token as a length-1 prompt). Prefill is one step per
prompt token, so rows with different prompt lengths share one loop: while a row is still inside its
prompt, the next token is forced to the prompt's and nothing is chosen or scored for it.

Shapes in names: B batch, L prompt length, T max_length, V vocab, K beams, C beam candidates (2K).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

NEG_INF = -jnp.inf


def repeat_cache(cache, n: int):
  """Every cache leaf with each batch row repeated n times in place: [B, ...] -> [B * n, ...]."""
  return jax.tree.map(lambda leaf: jnp.repeat(leaf, n, axis=0), cache)


def _take_rows(cache, rows):
  """Cache rows gathered along the leading (batch) axis."""
  return jax.tree.map(lambda leaf: jnp.take(leaf, rows, axis=0), cache)


def _prompt_buffer(prompt_BL, prompt_lengths_B, max_length: int, pad_id: int):
  """The [B, T] token buffer: each prompt, then pad_id (also over any prompt padding)."""
  batch, prompt_len = prompt_BL.shape
  if prompt_len > max_length:
    raise ValueError(f"prompt length {prompt_len} is longer than max_length={max_length}")
  if max_length < 2:
    raise ValueError(f"max_length={max_length} leaves no room to generate (needs >= 2)")
  in_prompt_BL = jnp.arange(prompt_len)[None, :] < prompt_lengths_B[:, None]
  prompt_BL = jnp.where(in_prompt_BL, prompt_BL, pad_id).astype(jnp.int32)
  tokens_BT = jnp.full((batch, max_length), pad_id, jnp.int32)
  return lax.dynamic_update_slice(tokens_BT, prompt_BL, (0, 0))


def filter_logits(logits_BV, top_k: int = 0, top_p: float = 1.0):
  """Logits with everything outside the top-k, then outside the top-p nucleus, set to -inf (0 / 1.0 = off)."""
  vocab = logits_BV.shape[-1]
  if 0 < top_k < vocab:
    kth_B1 = lax.top_k(logits_BV, top_k)[0][..., -1:]
    # Ties with the k-th logit are all kept: a tie has no principled winner.
    logits_BV = jnp.where(logits_BV < kth_B1, NEG_INF, logits_BV)
  if top_p < 1.0:
    sorted_BV = -jnp.sort(-logits_BV, axis=-1)
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    # A token is in the nucleus while the mass of the tokens ranked above it is still short of
    # top_p: the smallest set that reaches top_p, and never empty (nothing ranks above the first).
    mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    num_kept_B1 = jnp.sum(mass_before_BV < top_p, axis=-1, keepdims=True)
    threshold_B1 = jnp.take_along_axis(sorted_BV, num_kept_B1 - 1, axis=-1)
    logits_BV = jnp.where(logits_BV < threshold_B1, NEG_INF, logits_BV)
  return logits_BV


def generate(step_fn, cache, prompt_BL, prompt_lengths_B, max_length: int, *, eos_id: int, pad_id: int,
             method: str = "greedy", temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, rng=None):
  """Greedy or sampled continuation of each prompt: (tokens_BT [B, max_length], lengths_B).

  tokens_BT holds the prompt, then the generated tokens up to and including eos, then pad_id;
  lengths_B counts the tokens before the padding (max_length for a row that never emits eos). Only a
  generated eos ends a row (a prompt may contain eos_id, as GPT-2's does). The loop stops as soon as
  every row has ended.

  method="sample" divides the logits by `temperature`, keeps the `top_k` most likely tokens (0 = all),
  then the top-p nucleus (the smallest set of most likely tokens whose probability reaches `top_p`;
  1.0 = all) and draws with jax.random.categorical from `rng` folded with the position, so a draw
  does not depend on how the loop is split. temperature, top_k and top_p are static Python numbers.
  """
  if method not in ("greedy", "sample"):
    raise ValueError(f"method must be 'greedy' or 'sample', got {method!r}")
  if method == "sample":
    if rng is None:
      raise ValueError("method='sample' needs an rng key")
    if not temperature > 0:
      raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
      raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  prompt_lengths_B = jnp.asarray(prompt_lengths_B, jnp.int32)
  tokens_BT = _prompt_buffer(jnp.asarray(prompt_BL), prompt_lengths_B, max_length, pad_id)
  batch = tokens_BT.shape[0]

  def choose(logits_BV, index):
    if method == "greedy":
      return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    logits_BV = filter_logits(logits_BV.astype(jnp.float32) / temperature, top_k, top_p)
    key = jax.random.fold_in(rng, index)
    return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)

  def cond(state):
    index, _, done_B, _, _ = state
    return (index < max_length - 1) & ~jnp.all(done_B)

  def body(state):
    index, tokens_BT, done_B, lengths_B, cache = state
    logits_BV, cache = step_fn(cache, tokens_BT[:, index], index)
    chosen_B = choose(logits_BV, index)
    nxt = index + 1
    in_prompt_B = nxt < prompt_lengths_B
    ends_B = ~in_prompt_B & ~done_B & (chosen_B == eos_id)
    next_B = jnp.where(in_prompt_B, tokens_BT[:, nxt], jnp.where(done_B, pad_id, chosen_B))
    tokens_BT = lax.dynamic_update_index_in_dim(tokens_BT, next_B, nxt, axis=1)
    lengths_B = jnp.where(ends_B, nxt + 1, lengths_B)
    return nxt, tokens_BT, done_B | ends_B, lengths_B, cache

  # A prompt that fills the whole buffer leaves its row nothing to generate.
  done_B = prompt_lengths_B >= max_length
  lengths_B = jnp.full((batch,), max_length, jnp.int32)
  state = (jnp.int32(0), tokens_BT, done_B, lengths_B, cache)
  _, tokens_BT, _, lengths_B, _ = lax.while_loop(cond, body, state)
  return tokens_BT, lengths_B


def beam_search(step_fn, cache, prompt_BL, prompt_lengths_B, max_length: int, *, num_beams: int, eos_id: int,
                pad_id: int, length_penalty: float = 1.0):
  """Best beam-search hypothesis per row: (tokens_BT [B, max_length], scores_B).

  `cache` has batch B, as for `generate`; it is expanded here to B * num_beams rows (row b's beams are
  rows b*K..b*K+K-1) and reordered with jnp.take on axis 0 as beams are chosen.

  Score of a finished hypothesis = (sum of the log-probabilities of its generated tokens) /
  (generated length ** length_penalty), where the generated length counts the tokens after the prompt,
  eos included: the convention of the beam search in Hugging Face transformers 4.57 (older releases
  divided by the whole sequence length, prompt included). A hypothesis still alive at max_length is
  finalised with its length and no eos. length_penalty 0 ranks by total log-probability; larger values
  favour longer hypotheses.

  Each step expands the 2K best (beam, token) candidates and keeps the K best that did not end as the
  alive beams. A candidate that ends in eos joins the K best finished ones only if it ranks among the K
  best candidates of its step, as in Hugging Face's: so num_beams=1 with length_penalty=0 is
  exactly greedy decoding (a greedy eos is the top candidate; a runner-up eos is not kept). A positive
  length penalty may still carry one beam past a greedy eos to a longer hypothesis that scores better.
  A row stops when it has K finished hypotheses and no alive one can still beat the worst of them: an
  alive log-probability can only fall, so the bound divides it by the longest reachable length if
  length_penalty > 0, else the shortest (Hugging Face's early_stopping="never"). The early stop is
  exact, never a heuristic. The returned tokens pad after eos.
  """
  num_beams = int(num_beams)
  if num_beams < 1:
    raise ValueError(f"num_beams must be >= 1, got {num_beams}")
  prompt_lengths_B = jnp.asarray(prompt_lengths_B, jnp.int32)
  prompt_BT = _prompt_buffer(jnp.asarray(prompt_BL), prompt_lengths_B, max_length, pad_id)
  batch, K, T = prompt_BT.shape[0], num_beams, max_length
  length_penalty = float(length_penalty)

  def normalise(logp, length):
    return logp / length.astype(jnp.float32) ** length_penalty

  def body(state):
    index, alive_seq_BKT, alive_logp_BK, fin_seq_BKT, fin_score_BK, done_B, cache = state
    logits_NV, cache = step_fn(cache, alive_seq_BKT[:, :, index].reshape(batch * K), index)
    vocab = logits_NV.shape[-1]
    logp_BKV = jax.nn.log_softmax(logits_NV.astype(jnp.float32), axis=-1).reshape(batch, K, vocab)
    nxt = index + 1
    gen_len_B1 = (nxt + 1 - prompt_lengths_B)[:, None]

    # 2K candidates: at most K of them end in eos (one per beam), so K alive ones always remain.
    cand_logp_BKV = alive_logp_BK[:, :, None] + logp_BKV
    top_logp_BC, top_flat_BC = lax.top_k(cand_logp_BKV.reshape(batch, K * vocab), 2 * K)
    top_beam_BC, top_token_BC = top_flat_BC // vocab, top_flat_BC % vocab
    top_seq_BCT = jnp.take_along_axis(alive_seq_BKT, top_beam_BC[:, :, None], axis=1)
    top_seq_BCT = top_seq_BCT.at[:, :, nxt].set(top_token_BC)
    ends_BC = top_token_BC == eos_id

    new_alive_logp_BK, pick_BK = lax.top_k(jnp.where(ends_BC, NEG_INF, top_logp_BC), K)
    new_alive_seq_BKT = jnp.take_along_axis(top_seq_BCT, pick_BK[:, :, None], axis=1)
    new_alive_beam_BK = jnp.take_along_axis(top_beam_BC, pick_BK, axis=1)

    # At the last position the alive candidates are finalised too (beyond the K best, they cannot enter).
    finishing_BC = jnp.where(ends_BC, jnp.arange(2 * K) < K, nxt == T - 1)
    cand_score_BC = jnp.where(finishing_BC, normalise(top_logp_BC, gen_len_B1), NEG_INF)
    merged_score_BM = jnp.concatenate([fin_score_BK, cand_score_BC], axis=1)
    merged_seq_BMT = jnp.concatenate([fin_seq_BKT, top_seq_BCT], axis=1)
    new_fin_score_BK, pick_BK = lax.top_k(merged_score_BM, K)
    new_fin_seq_BKT = jnp.take_along_axis(merged_seq_BMT, pick_BK[:, :, None], axis=1)

    # A row inside its prompt keeps its beams as they are (the buffer already holds the prompt).
    generating_B = nxt >= prompt_lengths_B
    gen_B1, gen_B11 = generating_B[:, None], generating_B[:, None, None]
    alive_seq_BKT = jnp.where(gen_B11, new_alive_seq_BKT, alive_seq_BKT)
    alive_logp_BK = jnp.where(gen_B1, new_alive_logp_BK, alive_logp_BK)
    beam_BK = jnp.where(gen_B1, new_alive_beam_BK, jnp.arange(K)[None, :])
    cache = _take_rows(cache, (jnp.arange(batch)[:, None] * K + beam_BK).reshape(-1))
    # A finished row keeps its finished set (nothing alive could enter it anyway).
    update_B1 = (generating_B & ~done_B)[:, None]
    fin_score_BK = jnp.where(update_B1, new_fin_score_BK, fin_score_BK)
    fin_seq_BKT = jnp.where(update_B1[:, :, None], new_fin_seq_BKT, fin_seq_BKT)

    bound_len_B1 = (T - prompt_lengths_B)[:, None] if length_penalty > 0 else gen_len_B1 + 1
    best_alive_B = normalise(alive_logp_BK, bound_len_B1)[:, 0]
    worst_fin_B = fin_score_BK[:, -1]
    stop_B = generating_B & (worst_fin_B > NEG_INF) & (worst_fin_B >= best_alive_B)
    return nxt, alive_seq_BKT, alive_logp_BK, fin_seq_BKT, fin_score_BK, done_B | stop_B, cache

  def cond(state):
    index, done_B = state[0], state[5]
    return (index < T - 1) & ~jnp.all(done_B)

  alive_seq_BKT = jnp.broadcast_to(prompt_BT[:, None, :], (batch, K, T))
  # The K beams start as copies of the prompt; only the first may expand, or the copies would fill the beam.
  alive_logp_BK = jnp.tile(jnp.where(jnp.arange(K) == 0, 0.0, NEG_INF)[None, :], (batch, 1))
  fin_score_BK = jnp.full((batch, K), NEG_INF, jnp.float32)
  done_B = prompt_lengths_B >= T
  state = (jnp.int32(0), alive_seq_BKT, alive_logp_BK, alive_seq_BKT, fin_score_BK, done_B,
           repeat_cache(cache, K))
  _, alive_seq_BKT, alive_logp_BK, fin_seq_BKT, fin_score_BK, _, _ = lax.while_loop(cond, body, state)
  # Finished sets are sorted best first; a row whose prompt filled the buffer finished nothing.
  has_fin_B = fin_score_BK[:, 0] > NEG_INF
  tokens_BT = jnp.where(has_fin_B[:, None], fin_seq_BKT[:, 0], alive_seq_BKT[:, 0])
  scores_B = jnp.where(has_fin_B, fin_score_BK[:, 0], alive_logp_BK[:, 0])
  return tokens_BT, scores_B
