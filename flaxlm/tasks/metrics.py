"""Evaluation metrics written from their definitions: GLUE, CoNLL span F1, SQuAD EM/F1."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np

# ----------------------------------------------------------------------------- classification


def accuracy(labels, predictions) -> float:
  """Share of predictions equal to the label."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  return float((labels == predictions).mean()) if labels.size else 0.0


def f1_binary(labels, predictions, positive: int = 1) -> float:
  """F1 of the positive class: 2 TP / (2 TP + FP + FN)."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  tp = np.sum((predictions == positive) & (labels == positive))
  fp = np.sum((predictions == positive) & (labels != positive))
  fn = np.sum((predictions != positive) & (labels == positive))
  return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def matthews_corrcoef(labels, predictions) -> float:
  """Matthews correlation of two binary label sequences (0 when a marginal is constant)."""
  labels, predictions = np.asarray(labels).astype(bool), np.asarray(predictions).astype(bool)
  tp = float(np.sum(labels & predictions))
  tn = float(np.sum(~labels & ~predictions))
  fp = float(np.sum(~labels & predictions))
  fn = float(np.sum(labels & ~predictions))
  denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(x, y) -> float:
  """Pearson correlation coefficient."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  x, y = x - x.mean(), y - y.mean()
  denominator = np.sqrt((x * x).sum() * (y * y).sum())
  return float((x * y).sum() / denominator) if denominator else 0.0


def _ranks(x) -> np.ndarray:
  """1-based ranks, ties sharing their average rank."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x))
  sorted_x = x[order]
  start = 0
  while start < len(x):
    end = start
    while end + 1 < len(x) and sorted_x[end + 1] == sorted_x[start]:
      end += 1
    ranks[order[start:end + 1]] = (start + end) / 2 + 1
    start = end + 1
  return ranks


def spearman(x, y) -> float:
  """Spearman rank correlation: Pearson of the (tie-averaged) ranks."""
  return pearson(_ranks(x), _ranks(y))


# ----------------------------------------------------------------------------- NER spans


def iob2_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
  """(type, first, last) entity spans of an IOB2 tag sequence, read as conlleval does.

  An I-X that does not continue an X entity (after O, or after another type) starts a new one.
  """
  spans = set()
  kind, start = None, 0
  for i, tag in enumerate([*tags, "O"]):
    prefix, _, label = tag.partition("-")
    continues = prefix == "I" and label == kind
    if kind is not None and not continues:
      spans.add((kind, start, i - 1))
      kind = None
    if prefix in ("B", "I") and not continues:
      kind, start = label, i
  return spans


def span_prf(gold_sequences, predicted_sequences) -> dict[str, float]:
  """Micro precision, recall and F1 over exactly matching (type, start, end) entity spans."""
  tp = n_gold = n_pred = 0
  for gold, predicted in zip(gold_sequences, predicted_sequences, strict=True):
    g, p = iob2_spans(gold), iob2_spans(predicted)
    tp += len(g & p)
    n_gold += len(g)
    n_pred += len(p)
  precision = tp / n_pred if n_pred else 0.0
  recall = tp / n_gold if n_gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1}


# ----------------------------------------------------------------------------- SQuAD


def normalize_answer(text: str) -> str:
  """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in set(string.punctuation))
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
  """1.0 when the normalised strings are equal."""
  return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
  """Bag-of-tokens F1 of the normalised strings; two empty answers agree (SQuAD v2 no-answer)."""
  p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
  if not p or not g:
    return float(p == g)
  common = sum((collections.Counter(p) & collections.Counter(g)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(p), common / len(g)
  return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], gold_answers: dict[str, list[str]]) -> dict[str, float]:
  """Exact match and F1 in percent, each the max over a question's gold answers, averaged.

  A question with no gold answers (SQuAD v2) counts the empty string as its answer.
  """
  em = f1 = 0.0
  for qid, answers in gold_answers.items():
    answers = answers or [""]
    prediction = predictions.get(qid, "")
    em += max(exact_match(prediction, a) for a in answers)
    f1 += max(token_f1(prediction, a) for a in answers)
  n = max(len(gold_answers), 1)
  return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}
