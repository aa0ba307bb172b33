"""Metrics against scikit-learn / scipy and hand-worked conlleval and SQuAD cases."""

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from flaxlm.tasks import metrics


def test_classification_metrics_match_sklearn():
  rng = np.random.default_rng(0)
  for _ in range(5):
    y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert metrics.accuracy(y, p) == pytest.approx(sklearn.metrics.accuracy_score(y, p))
    assert metrics.f1_binary(y, p) == pytest.approx(sklearn.metrics.f1_score(y, p))
    assert metrics.matthews_corrcoef(y, p) == pytest.approx(sklearn.metrics.matthews_corrcoef(y, p))


def test_matthews_hand_worked_and_degenerate():
  # tp=2 tn=1 fp=1 fn=0: (2*1 - 1*0) / sqrt(3*2*2*1) = 2 / sqrt(12).
  assert metrics.matthews_corrcoef([1, 1, 0, 0], [1, 1, 1, 0]) == pytest.approx(2 / np.sqrt(12))
  assert metrics.matthews_corrcoef([1, 0, 1], [1, 1, 1]) == 0.0  # A constant prediction.


def test_correlations_match_scipy_with_ties():
  rng = np.random.default_rng(1)
  x = rng.integers(0, 6, 100).astype(float)  # Many ties.
  y = x + rng.normal(size=100)
  assert metrics.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0])
  assert metrics.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0])
  assert metrics.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


@pytest.mark.parametrize("tags,spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 1), ("LOC", 3, 3)}),
    (["I-PER", "I-PER", "O"], {("PER", 0, 1)}),  # I- after nothing starts an entity (conlleval).
    (["B-PER", "I-ORG", "I-ORG"], {("PER", 0, 0), ("ORG", 1, 2)}),  # A type change starts a new one.
    (["B-PER", "B-PER", "I-PER"], {("PER", 0, 0), ("PER", 1, 2)}),  # B- always starts anew.
    (["O", "O"], set()),
    (["B-MISC"], {("MISC", 0, 0)}),
])
def test_iob2_spans_hand_worked(tags, spans):
  assert metrics.iob2_spans(tags) == spans


def test_span_prf_hand_worked():
  gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
  pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-MISC"]]
  # Gold spans 3; predicted 4; correct: PER(0,1) and ORG(0,0) -> P 2/4, R 2/3, F1 2PR/(P+R) = 4/7.
  out = metrics.span_prf(gold, pred)
  assert out["precision"] == pytest.approx(0.5)
  assert out["recall"] == pytest.approx(2 / 3)
  assert out["f1"] == pytest.approx(4 / 7)
  # A boundary error is a miss even when the type is right.
  assert metrics.span_prf([["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0


def test_squad_normalisation_and_scores():
  assert metrics.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
  assert metrics.normalize_answer("an apple, a pear") == "apple pear"
  assert metrics.exact_match("the Eiffel Tower", "Eiffel Tower.") == 1.0
  # Prediction "in Paris France" vs gold "Paris": common 1, P 1/3, R 1 -> F1 0.5.
  assert metrics.token_f1("in Paris France", "Paris") == pytest.approx(0.5)
  scores = metrics.squad_scores({"a": "Paris", "b": "", "c": "blue car"},
                                {"a": ["paris", "Paris, France"], "b": [], "c": ["red car"]})
  # a: EM 1, F1 1; b: no answer predicted for an unanswerable question: 1, 1; c: EM 0, F1 0.5.
  assert scores["exact_match"] == pytest.approx(200 / 3)
  assert scores["f1"] == pytest.approx(250 / 3)
