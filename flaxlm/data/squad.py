"""SQuAD v1.1 / v2.0: reading the JSON, cutting long contexts into windows, and decoding answers.

A feature is [CLS] question [SEP] context window [SEP]. Windows start every `doc_stride` context
tokens (BERT's convention: the stride is the step between window starts). Training marks the
answer's first and last tokens, or [CLS] when the window does not hold the whole answer (and for
unanswerable v2 questions). Decoding follows BERT's n-best search, counting a token only in the
window where it has the most context on both sides.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from flaxlm.data.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class QaExample:
  """A question about a context, with its gold answers (empty for an unanswerable v2 question)."""

  qid: str
  question: str
  context: str
  answers: tuple[tuple[str, int], ...]  # (text, character start in context)


def read_squad(path: str) -> list[QaExample]:
  """Examples of a SQuAD v1.1 or v2.0 JSON file; a malformed answer is an error naming the question."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"data file not found: {path}")
  with open(path, encoding="utf-8") as f:
    try:
      data = json.load(f)["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"{path}: not SQuAD JSON ({e})") from e
  examples = []
  for article in data:
    for paragraph in article["paragraphs"]:
      context = paragraph["context"]
      for qa in paragraph["qas"]:
        answers = []
        for answer in [] if qa.get("is_impossible") else qa["answers"]:
          text, start = answer["text"], int(answer["answer_start"])
          if context[start:start + len(text)] != text:
            raise ValueError(f"{path}: question {qa['id']}: answer {text!r} is not at character {start}")
          answers.append((text, start))
        examples.append(QaExample(qa["id"], qa["question"], context, tuple(answers)))
  if not examples:
    raise ValueError(f"{path}: no questions")
  return examples


@dataclasses.dataclass
class QaFeature:
  """One window of one example, with what decoding needs to map tokens back to the context."""

  example_index: int
  input_ids: np.ndarray
  token_type_ids: np.ndarray
  start_position: int  # Token index in the feature; 0 ([CLS]) when the answer is not inside.
  end_position: int
  context_offsets: dict[int, tuple[int, int]]  # Feature token index -> context character span.
  max_context: dict[int, bool]  # Feature token index -> is this the token's best window?


def make_features(examples: list[QaExample], tokenizer: Tokenizer, max_seq_len: int, doc_stride: int,
                  max_query_length: int) -> list[QaFeature]:
  """Windows of every example (the first gold answer marks the training span)."""
  features = []
  for index, example in enumerate(examples):
    question = tokenizer.encode(example.question)[:max_query_length]
    context_ids, offsets, _ = tokenizer.encode_with_offsets(example.context)
    budget = max_seq_len - len(question) - 3
    if budget <= 0:
      raise ValueError(f"question {example.qid}: max_seq_len {max_seq_len} leaves no room for context")
    windows, start = [], 0
    while True:
      length = min(budget, len(context_ids) - start)
      windows.append((start, length))
      if start + length >= len(context_ids):
        break
      start += min(length, doc_stride)
    answer_span = None
    if example.answers:
      text, char_start = example.answers[0]
      char_end = char_start + len(text)
      inside = [i for i, (s, e) in enumerate(offsets) if s < char_end and e > char_start]
      if inside:
        answer_span = (inside[0], inside[-1])
    for w, (start, length) in enumerate(windows):
      prefix = len(question) + 2
      ids = [tokenizer.cls_id, *question, tokenizer.sep_id, *context_ids[start:start + length], tokenizer.sep_id]
      types = [0] * prefix + [1] * (length + 1)
      context_offsets, max_context = {}, {}
      for j in range(length):
        token = start + j
        context_offsets[prefix + j] = offsets[token]
        max_context[prefix + j] = _best_window(windows, token) == w
      start_position = end_position = 0
      if answer_span and start <= answer_span[0] and answer_span[1] < start + length:
        start_position, end_position = answer_span[0] - start + prefix, answer_span[1] - start + prefix
      features.append(QaFeature(index, np.array(ids, np.int32), np.array(types, np.int32), start_position,
                                end_position, context_offsets, max_context))
  return features


def _best_window(windows, token: int) -> int:
  """The window in which `token` has the most context: max of min(left, right), ties to the longer window."""
  best, best_score = 0, None
  for w, (start, length) in enumerate(windows):
    if not start <= token < start + length:
      continue
    score = min(token - start, start + length - 1 - token) + 0.01 * length
    if best_score is None or score > best_score:
      best, best_score = w, score
  return best


def decode_answers(examples: list[QaExample], features: list[QaFeature], start_logits, end_logits, *,
                   n_best: int, max_answer_length: int, version_2: bool,
                   null_threshold: float) -> dict[str, str]:
  """Best answer text per question id from per-feature start/end logits.

  Each feature offers its n_best start and end tokens; a pair is a candidate when both lie in the
  context, the start is in its best window, start <= end, and the span is at most
  max_answer_length tokens. v2 answers "" when the best null score ([CLS] start + end, the smallest
  over the windows) exceeds the best span score by more than null_threshold.
  """
  by_example: dict[int, list[int]] = {}
  for f, feature in enumerate(features):
    by_example.setdefault(feature.example_index, []).append(f)
  answers = {}
  for index, example in enumerate(examples):
    best_score, best_text, null_score = -np.inf, "", np.inf
    for f in by_example.get(index, []):
      feature, start, end = features[f], np.asarray(start_logits[f]), np.asarray(end_logits[f])
      null_score = min(null_score, float(start[0] + end[0]))
      starts = np.argsort(-start)[:n_best]
      ends = np.argsort(-end)[:n_best]
      for s in starts:
        if s not in feature.context_offsets or not feature.max_context[s]:
          continue
        for e in ends:
          if e not in feature.context_offsets or e < s or e - s + 1 > max_answer_length:
            continue
          score = float(start[s] + end[e])
          if score > best_score:
            best_score = score
            best_text = example.context[feature.context_offsets[s][0]:feature.context_offsets[e][1]]
    if version_2 and null_score - best_score > null_threshold:
      best_text = ""
    answers[example.qid] = best_text
  return answers
