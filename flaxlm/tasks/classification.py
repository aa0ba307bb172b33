"""Sequence classification and regression for GLUE: one sentence or a pair, a label per example.

Examples are packed several to a row; each starts with its own [CLS], and the label sits at that
token (weight 1 there, 0 elsewhere), so the loop, the packing and the loss stay per-token.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm.data import glue, pipeline, sources
from flaxlm.data.tokenizer import Tokenizer
from flaxlm.models import BertForSequenceClassification, ModelConfig
from flaxlm.tasks import metrics as metric_lib
from flaxlm.tasks.base import ExampleTask, ratios
from flaxlm.train import flops

_METRICS = {
    "accuracy": metric_lib.accuracy,
    "f1": metric_lib.f1_binary,
    "matthews_corrcoef": metric_lib.matthews_corrcoef,
    "pearson": metric_lib.pearson,
    "spearman": metric_lib.spearman,
}


def truncate_pair(a: list[int], b: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
  """Drops tokens from the end of the longer text until both fit (BERT's longest-first rule)."""
  a, b = list(a), list(b)
  while len(a) + len(b) > max_tokens:
    (a if len(a) >= len(b) else b).pop()
  return a, b


def encode_texts(tokenizer: Tokenizer, texts, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  """[CLS] a [SEP] (b [SEP]) token ids and token types (0 for a, 1 for b), truncated to fit."""
  ids = [tokenizer.encode(t) for t in texts]
  if len(ids) == 1:
    a, b = ids[0][: max_seq_len - 2], None
  else:
    a, b = truncate_pair(ids[0], ids[1], max_seq_len - 3)
  tokens = [tokenizer.cls_id, *a, tokenizer.sep_id]
  types = [0] * len(tokens)
  if b is not None:
    tokens += [*b, tokenizer.sep_id]
    types += [1] * (len(b) + 1)
  return np.array(tokens, np.int32), np.array(types, np.int32)


class ClassificationTask(ExampleTask):
  """GLUE-style classification (cross-entropy) or regression (squared error) at each [CLS]."""

  name = "classification"
  float_features = ("labels", "label_weights")

  def __init__(self, config, tokenizer: Tokenizer):
    self.config = config
    self.tokenizer = tokenizer
    self.glue = glue.GLUE_TASKS[config.task.glue_task]
    self.labels = tuple(config.task.labels) or self.glue.labels
    self.num_outputs = len(self.labels) or 1
    self.model_config = ModelConfig.from_config(config.model, tokenizer.vocab_size)
    self.model = BertForSequenceClassification(self.model_config, num_labels=self.num_outputs)
    self.seq_len = config.data.max_seq_len
    first_set = self.eval_set_names()[0]
    self.best_metric = (_prefixed(first_set, self.glue.metrics[0]), "max")
    self._encoded: dict[str, list] = {}

  @classmethod
  def validate_config(cls, config, need) -> None:
    d = config.data
    need(config.task.glue_task in glue.GLUE_TASKS, "task.glue_task",
         f"{config.task.glue_task!r} is not one of {sorted(glue.GLUE_TASKS)}")
    need(bool(d.tfds_name) or bool(d.train_file and d.eval_file), "data.train_file",
         "classification needs data.train_file and data.eval_file (GLUE TSV), or data.tfds_name (glue/NAME)")
    for key in ("train_file", "eval_file"):
      if d[key]:
        need(os.path.isfile(d[key]), f"data.{key}", f"data file not found: {d[key]}")
    for item in d.extra_eval_files:
      name, sep, path = item.partition("=")
      need(bool(sep and name), "data.extra_eval_files", f"{item!r} is not name=path")
      need(os.path.isfile(path), "data.extra_eval_files", f"data file not found: {path}")

  # ---------------------------------------------------------------- data

  @classmethod
  def read_examples(cls, config, which: str) -> list[glue.TextExample]:
    """Examples of 'train' or of a named eval set ('' is the primary one)."""
    task, d = glue.GLUE_TASKS[config.task.glue_task], config.data
    if d.tfds_name:
      data_dir = sources.tfds_data_dir(d.tfds_data_dir)
      if which == "train":
        return glue.read_tfds(task, d.train_split, data_dir)
      splits = dict(zip(cls._tfds_eval_names(task), task.eval_splits))
      return glue.read_tfds(task, splits[which], data_dir)
    if which == "train":
      return glue.read_tsv(d.train_file, task)
    extra = dict(item.split("=", 1) for item in d.extra_eval_files)
    return glue.read_tsv(extra[which] if which in extra else d.eval_file, task)

  @staticmethod
  def _tfds_eval_names(task: glue.GlueTask) -> list[str]:
    return [""] if len(task.eval_splits) == 1 else [s.replace("validation_", "") for s in task.eval_splits]

  def eval_set_names(self) -> list[str]:
    primary = self._tfds_eval_names(self.glue)
    if self.config.data.tfds_name:
      return primary
    # The eval_file takes the task's first eval-set name ("matched" for MNLI), extras their own.
    return [primary[0], *(item.split("=", 1)[0] for item in self.config.data.extra_eval_files)]

  @classmethod
  def vocab_texts(cls, config):
    for example in cls.read_examples(config, "train"):
      yield from example.texts

  def encode(self, example: glue.TextExample) -> dict[str, np.ndarray]:
    """Token arrays of one example, the label at its [CLS]."""
    ids, types = encode_texts(self.tokenizer, example.texts, self.seq_len)
    labels = np.zeros(len(ids), np.float32)
    weights = np.zeros(len(ids), np.float32)
    labels[0], weights[0] = example.label, 1.0
    return {"input_ids": ids, "token_type_ids": types, "labels": labels, "label_weights": weights}

  def encoded_examples(self, which: str) -> list[dict[str, np.ndarray]]:
    if which not in self._encoded:
      self._encoded[which] = [self.encode(e) for e in self.read_examples(self.config, which)]
    return self._encoded[which]

  # ---------------------------------------------------------------- model

  def loss_and_logits(self, params, batch, rng, train: bool):
    """(summed loss over examples, number of examples, metrics, logits)."""
    logits_BLC = self.apply(params, batch, train, rng)
    weights_BL = batch["label_weights"]
    count = weights_BL.sum()
    if self.glue.is_regression:
      per_token = (logits_BLC[..., 0] - batch["labels"]) ** 2
      metrics = {}
    else:
      labels_BL = batch["labels"].astype(jnp.int32)
      log_probs = jax.nn.log_softmax(logits_BLC, axis=-1)
      per_token = -jnp.take_along_axis(log_probs, labels_BL[..., None], axis=-1)[..., 0]
      correct = ((jnp.argmax(logits_BLC, -1) == labels_BL) * weights_BL).sum()
      metrics = {"accuracy": (correct, count)}
    loss_sum = (per_token * weights_BL).sum()
    return loss_sum, count, {"loss": (loss_sum, count), **metrics, "num_examples": (count, None)}, logits_BLC

  def eval_outputs(self, logits_BLC) -> dict:
    if self.glue.is_regression:
      return {"prediction": logits_BLC[..., 0]}
    return {"prediction": jnp.argmax(logits_BLC, -1).astype(jnp.float32)}

  def eval_collector(self, name: str):
    return _GlueCollector(self.glue, prefix=name)

  def train_flops_per_row(self) -> float:
    # The pooler and classifier run at every position: 2 D^2 + 2 D C forward per token.
    cfg = self.model_config
    head = 2 * cfg.hidden_size * (cfg.hidden_size + self.num_outputs)
    return 3.0 * self.seq_len * (flops.encoder_forward_flops_per_token(cfg, self.seq_len) + head)

  # ---------------------------------------------------------------- prediction

  def predict(self, params, texts: list[str], pairs: list[str] | None = None, top_k: int = 5) -> list[str]:
    """Printable label and class probabilities (or the regression score) for each text (or pair)."""
    del top_k
    inputs = [(t,) if not pairs else (t, p) for t, p in zip(texts, pairs or texts)]
    examples = [self.encode(glue.TextExample(x, 0.0)) for x in inputs]
    batch = self._padded_batch(examples, len(examples), self.seq_len)
    logits = np.asarray(self.apply(params, batch))[:, 0]
    lines = []
    for x, row in zip(inputs, logits):
      shown = " ||| ".join(x)
      if self.glue.is_regression:
        lines.append(f"{shown}\n  score {row[0]:.4f}")
        continue
      probs = np.exp(row - row.max())
      probs /= probs.sum()
      best = int(np.argmax(probs))
      detail = "  ".join(f"{label} {p:.3f}" for label, p in zip(self.labels, probs))
      lines.append(f"{shown}\n  label {self.labels[best]} ({detail})")
    return lines


def _prefixed(prefix: str, name: str) -> str:
  return f"{prefix}_{name}" if prefix else name


class _GlueCollector:
  """Gathers each example's (label, prediction) from the [CLS] tokens, then scores the task's metrics."""

  def __init__(self, task: glue.GlueTask, prefix: str):
    self.task, self.prefix = task, prefix
    self.labels, self.predictions = [], []

  def add(self, batch, outputs) -> None:
    where = batch["label_weights"] > 0
    self.labels.append(batch["labels"][where])
    self.predictions.append(outputs["prediction"][where])

  def result(self, totals: dict) -> dict[str, float]:
    labels, predictions = np.concatenate(self.labels), np.concatenate(self.predictions)
    out = ratios(totals)
    for name in self.task.metrics:
      out[name] = _METRICS[name](labels, predictions)
    return {_prefixed(self.prefix, k): v for k, v in out.items()}
