"""Token classification (NER): an IOB2 tag per word, predicted at the word's first word piece.

Sentences are packed several to a row. A sentence longer than a row is cut at word boundaries
into pieces; eval puts the pieces back together, so every word of the dev set is scored.
"""

from __future__ import annotations

import collections
import os

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm.data import conll, pipeline
from flaxlm.data.tokenizer import Tokenizer
from flaxlm.models import BertForTokenClassification, ModelConfig
from flaxlm.tasks import metrics as metric_lib
from flaxlm.tasks.base import ExampleTask, ratios
from flaxlm.train import flops


class NerTask(ExampleTask):
  """Named-entity recognition scored by exact-match span F1 (conlleval semantics)."""

  name = "ner"
  best_metric = ("f1", "max")
  int_features = ("input_ids", "token_type_ids", "example_ids", "word_ids")
  float_features = ("labels", "label_weights")

  def __init__(self, config, tokenizer: Tokenizer):
    self.config = config
    self.tokenizer = tokenizer
    self.labels = tuple(config.task.labels) or conll.label_set(self._sentences("train"))
    self.label_ids = {t: i for i, t in enumerate(self.labels)}
    self.model_config = ModelConfig.from_config(config.model, tokenizer.vocab_size)
    self.model = BertForTokenClassification(self.model_config, num_labels=len(self.labels))
    self.seq_len = config.data.max_seq_len
    self._encoded: dict[str, list] = {}

  @classmethod
  def validate_config(cls, config, need) -> None:
    for key in ("train_file", "eval_file"):
      need(bool(config.data[key]), f"data.{key}", "NER needs CoNLL train and eval files")
      need(os.path.isfile(config.data[key]), f"data.{key}", f"data file not found: {config.data[key]}")

  # ---------------------------------------------------------------- data

  def _sentences(self, which: str) -> list[conll.TaggedSentence]:
    return conll.read_conll(self.config.data.train_file if which == "train" else self.config.data.eval_file)

  @classmethod
  def vocab_texts(cls, config):
    for sentence in conll.read_conll(config.data.train_file):
      yield " ".join(sentence.words)

  def encode(self, index: int, sentence: conll.TaggedSentence) -> list[dict[str, np.ndarray]]:
    """A sentence as one or more examples: [CLS] pieces [SEP], the tag id at each word's first piece."""
    for tag in sentence.tags:
      if tag not in self.label_ids:
        raise ValueError(f"sentence {index + 1}: tag {tag!r} is not in the label set {list(self.labels)}")
    ids, word_of_token = self.tokenizer.encode_words(sentence.words)
    pieces, start = [], 0
    max_tokens = self.seq_len - 2
    while start < len(ids):
      end = min(start + max_tokens, len(ids))
      # Cut at a word boundary unless one word alone overflows the row.
      while end < len(ids) and end > start + 1 and word_of_token[end] == word_of_token[end - 1]:
        end -= 1
      pieces.append((start, end))
      start = end
    out = []
    for start, end in pieces or [(0, 0)]:
      tokens = [self.tokenizer.cls_id, *ids[start:end], self.tokenizer.sep_id]
      n = len(tokens)
      labels, weights = np.zeros(n, np.float32), np.zeros(n, np.float32)
      word_ids = np.full(n, -1, np.int32)
      for t in range(start, end):
        w = word_of_token[t]
        if w >= 0 and (t == 0 or word_of_token[t - 1] != w):
          labels[t - start + 1] = self.label_ids[sentence.tags[w]]
          weights[t - start + 1] = 1.0
          word_ids[t - start + 1] = w
      out.append({"input_ids": np.array(tokens, np.int32), "token_type_ids": np.zeros(n, np.int32),
                  "labels": labels, "label_weights": weights, "example_ids": np.full(n, index + 1, np.int32),
                  "word_ids": word_ids})
    return out

  def encoded_examples(self, which: str) -> list[dict[str, np.ndarray]]:
    if which not in self._encoded:
      self._encoded[which] = [e for i, s in enumerate(self._sentences(which)) for e in self.encode(i, s)]
    return self._encoded[which]

  # ---------------------------------------------------------------- model

  def loss_and_logits(self, params, batch, rng, train: bool):
    """(summed word loss, number of labelled words, metrics, logits)."""
    logits_BLC = self.apply(params, batch, train, rng)
    labels_BL, weights_BL = batch["labels"].astype(jnp.int32), batch["label_weights"]
    nll_BL = -jnp.take_along_axis(jax.nn.log_softmax(logits_BLC, -1), labels_BL[..., None], axis=-1)[..., 0]
    count = weights_BL.sum()
    loss_sum = (nll_BL * weights_BL).sum()
    correct = ((jnp.argmax(logits_BLC, -1) == labels_BL) * weights_BL).sum()
    sentences = jnp.max(batch["segment_ids"], axis=1).sum().astype(jnp.float32)
    metrics = {"loss": (loss_sum, count), "tag_accuracy": (correct, count), "num_words": (count, None),
               "num_examples": (sentences, None)}
    return loss_sum, count, metrics, logits_BLC

  def eval_outputs(self, logits_BLC) -> dict:
    return {"prediction": jnp.argmax(logits_BLC, -1).astype(jnp.int32)}

  def eval_collector(self, name: str):
    del name
    return _SpanCollector(self.labels, self._sentences(""))

  def train_flops_per_row(self) -> float:
    cfg = self.model_config
    return 3.0 * self.seq_len * (flops.encoder_forward_flops_per_token(cfg, self.seq_len)
                                 + 2 * cfg.hidden_size * len(self.labels))

  # ---------------------------------------------------------------- prediction

  def predict(self, params, texts: list[str], pairs=None, top_k: int = 5) -> list[str]:
    """Each text, then its entities: type, character span and surface text."""
    del pairs, top_k
    lines = []
    for text in texts:
      ids, offsets, word_of_token = self.tokenizer.encode_with_offsets(text)
      ids = ids[: self.seq_len - 2]
      words = _words_of(offsets[: len(ids)], word_of_token[: len(ids)])
      example = {"input_ids": np.array([self.tokenizer.cls_id, *ids, self.tokenizer.sep_id], np.int32)}
      example["token_type_ids"] = np.zeros_like(example["input_ids"])
      batch = self._padded_batch([example], 1, self.seq_len)
      logits = np.asarray(self.apply(params, batch))[0]
      tags, spans = [], []
      for first_token, (start, end) in words:
        tags.append(self.labels[int(np.argmax(logits[first_token + 1]))])
        spans.append((start, end))
      lines.append(text)
      for kind, first, last in sorted(metric_lib.iob2_spans(tags), key=lambda s: s[1]):
        start, end = spans[first][0], spans[last][1]
        lines.append(f"  {kind} [{start}:{end}] {text[start:end]}")
    return lines


def _words_of(offsets, word_of_token) -> list[tuple[int, tuple[int, int]]]:
  """(first token index, (start, end) characters) of each pre-tokenizer word."""
  words = []
  for i, ((start, end), word) in enumerate(zip(offsets, word_of_token)):
    if words and i > 0 and word == word_of_token[i - 1]:
      words[-1] = (words[-1][0], (words[-1][1][0], end))
    else:
      words.append((i, (start, end)))
  return words


class _SpanCollector:
  """Rebuilds each dev sentence's predicted tags from its (possibly several) rows, then scores spans."""

  def __init__(self, labels, sentences):
    self.labels, self.sentences = labels, sentences
    self.predicted = collections.defaultdict(dict)

  def add(self, batch, outputs) -> None:
    where = batch["label_weights"] > 0
    for example, word, tag in zip(batch["example_ids"][where], batch["word_ids"][where],
                                  outputs["prediction"][where]):
      self.predicted[int(example) - 1][int(word)] = self.labels[int(tag)]

  def result(self, totals: dict) -> dict[str, float]:
    gold = [s.tags for s in self.sentences]
    predicted = [[self.predicted[i].get(w, "O") for w in range(len(s.words))] for i, s in enumerate(self.sentences)]
    return {**ratios(totals), **metric_lib.span_prf(gold, predicted)}
