"""Extractive QA (SQuAD v1.1 and v2.0): start and end logits over each window's tokens.

Windows are long (most fill max_seq_len), so each takes its own row; the answer's first and last
tokens are marked per token, which keeps the shared padding and batching code.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm.data import pipeline, squad
from flaxlm.data.tokenizer import Tokenizer
from flaxlm.models import BertForQuestionAnswering, ModelConfig
from flaxlm.tasks import metrics as metric_lib
from flaxlm.tasks.base import ExampleTask, ratios
from flaxlm.train import flops


class QaTask(ExampleTask):
  """SQuAD: cross-entropy of the start and end positions; eval by exact match and F1."""

  name = "qa"
  best_metric = ("f1", "max")
  int_features = ("input_ids", "token_type_ids", "feature_ids")
  float_features = ("start_marker", "end_marker")
  packed = False  # Windows mostly fill their rows; one window a row keeps the start/end softmax per row.

  def __init__(self, config, tokenizer: Tokenizer):
    self.config = config
    self.tokenizer = tokenizer
    self.model_config = ModelConfig.from_config(config.model, tokenizer.vocab_size)
    self.model = BertForQuestionAnswering(self.model_config)
    self.seq_len = config.data.max_seq_len
    self.version_2 = config.task.squad_version == "2.0"
    self._cache: dict[str, tuple] = {}

  @classmethod
  def validate_config(cls, config, need) -> None:
    t = config.task
    need(t.squad_version in ("1.1", "2.0"), "task.squad_version", f"{t.squad_version!r} is not 1.1 or 2.0")
    need(0 < t.doc_stride, "task.doc_stride", f"must be positive, got {t.doc_stride}")
    need(0 < t.max_query_length < config.data.max_seq_len - 3, "task.max_query_length",
         f"must be positive and leave room for context in max_seq_len {config.data.max_seq_len}")
    for key in ("train_file", "eval_file"):
      need(bool(config.data[key]), f"data.{key}", "QA needs SQuAD JSON train and eval files")
      need(os.path.isfile(config.data[key]), f"data.{key}", f"data file not found: {config.data[key]}")

  # ---------------------------------------------------------------- data

  @classmethod
  def vocab_texts(cls, config):
    seen = set()
    for example in squad.read_squad(config.data.train_file):
      if example.context not in seen:
        seen.add(example.context)
        yield example.context
      yield example.question

  def encoded_examples(self, which: str) -> list[dict[str, np.ndarray]]:
    return self._data(which)[2]

  def _data(self, which: str):
    """(examples, features, encoded rows) of 'train' or the eval set ('')."""
    if which not in self._cache:
      t = self.config.task
      path = self.config.data.train_file if which == "train" else self.config.data.eval_file
      examples = squad.read_squad(path)
      features = squad.make_features(examples, self.tokenizer, self.seq_len, t.doc_stride, t.max_query_length)
      rows = []
      for i, f in enumerate(features):
        n = len(f.input_ids)
        start, end = np.zeros(n, np.float32), np.zeros(n, np.float32)
        start[f.start_position], end[f.end_position] = 1.0, 1.0
        rows.append({"input_ids": f.input_ids, "token_type_ids": f.token_type_ids, "start_marker": start,
                     "end_marker": end, "feature_ids": np.full(n, i + 1, np.int32)})
      self._cache[which] = (examples, features, rows)
    return self._cache[which]

  # ---------------------------------------------------------------- model

  def loss_and_logits(self, params, batch, rng, train: bool):
    """(summed (start + end) / 2 cross-entropy over windows, number of windows, metrics, logits)."""
    logits_BL2 = self.apply(params, batch, train, rng)
    real_BL = batch["segment_ids"] > 0
    logits_BL2 = jnp.where(real_BL[..., None], logits_BL2, -1e9)
    log_probs_BL2 = jax.nn.log_softmax(logits_BL2, axis=1)
    windows_B = real_BL.any(axis=1).astype(jnp.float32)
    nll_B = -((log_probs_BL2[..., 0] * batch["start_marker"]).sum(1) +
              (log_probs_BL2[..., 1] * batch["end_marker"]).sum(1)) / 2
    count = windows_B.sum()
    loss_sum = (nll_B * windows_B).sum()
    return loss_sum, count, {"loss": (loss_sum, count), "num_windows": (count, None)}, logits_BL2

  def eval_outputs(self, logits_BL2) -> dict:
    return {"start_logits": logits_BL2[..., 0], "end_logits": logits_BL2[..., 1]}

  def eval_collector(self, name: str):
    del name
    return _AnswerCollector(self, *self._data("")[:2])

  def decode(self, examples, features, start_logits, end_logits) -> dict[str, str]:
    """Best answer per question id (see `squad.decode_answers`)."""
    t = self.config.task
    return squad.decode_answers(examples, features, start_logits, end_logits, n_best=t.n_best,
                                max_answer_length=t.max_answer_length, version_2=self.version_2,
                                null_threshold=t.null_threshold)

  def train_flops_per_row(self) -> float:
    cfg = self.model_config
    return 3.0 * self.seq_len * (flops.encoder_forward_flops_per_token(cfg, self.seq_len) + 4 * cfg.hidden_size)

  # ---------------------------------------------------------------- prediction

  def predict(self, params, texts: list[str], pairs: list[str] | None = None, top_k: int = 5) -> list[str]:
    """For each (question, context): the answer span with its character offsets."""
    del top_k
    if not pairs or len(pairs) != len(texts):
      raise ValueError("QA prediction needs a context for every question (--context)")
    examples = [squad.QaExample(str(i), q, c, ()) for i, (q, c) in enumerate(zip(texts, pairs))]
    t = self.config.task
    features = squad.make_features(examples, self.tokenizer, self.seq_len, t.doc_stride, t.max_query_length)
    rows = [{"input_ids": f.input_ids, "token_type_ids": f.token_type_ids} for f in features]
    batch = self._padded_batch(rows, len(rows), self.seq_len)
    logits = np.asarray(self.apply(params, batch))
    answers = self.decode(examples, features, logits[..., 0], logits[..., 1])
    lines = []
    for example in examples:
      answer = answers[example.qid]
      start = example.context.find(answer) if answer else -1
      where = f"[{start}:{start + len(answer)}]" if answer else "(no answer)"
      lines.append(f"{example.question}\n  answer {where} {answer}")
    return lines


class _AnswerCollector:
  """Gathers start/end logits per window, then decodes answers and scores them against the gold."""

  def __init__(self, task: QaTask, examples, features):
    self.task, self.examples, self.features = task, examples, features
    self.start, self.end = {}, {}

  def add(self, batch, outputs) -> None:
    for row in range(batch["feature_ids"].shape[0]):
      feature = int(batch["feature_ids"][row, 0]) - 1
      if feature >= 0:
        self.start[feature] = outputs["start_logits"][row]
        self.end[feature] = outputs["end_logits"][row]

  def result(self, totals: dict) -> dict[str, float]:
    n = len(self.features)
    missing = [f for f in range(n) if f not in self.start]
    if missing:
      raise RuntimeError(f"eval saw {n - len(missing)} of {n} QA windows")
    predictions = self.task.decode(self.examples, self.features, [self.start[f] for f in range(n)],
                                   [self.end[f] for f in range(n)])
    gold = {e.qid: [text for text, _ in e.answers] for e in self.examples}
    return {**ratios(totals), **metric_lib.squad_scores(predictions, gold)}
