"""GLUE tasks: the text fields, labels and metrics of each, read from GLUE TSV files or TFDS `glue/*`."""

from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """How one GLUE task is laid out and scored."""

  name: str
  tsv_text_columns: tuple  # Header names, or column indices for header-less files (CoLA).
  tsv_label_column: str | int
  tfds_text_fields: tuple[str, ...]
  labels: tuple[str, ...]  # Label names in id order (the TFDS order); empty: regression.
  metrics: tuple[str, ...]
  tsv_header: bool = True
  eval_splits: tuple[str, ...] = ("validation",)  # TFDS split names; MNLI has two.

  @property
  def is_regression(self) -> bool:
    return not self.labels


GLUE_TASKS = {
    "cola": GlueTask("cola", (3,), 1, ("sentence",), ("0", "1"), ("matthews_corrcoef", "accuracy"),
                     tsv_header=False),
    "sst2": GlueTask("sst2", ("sentence",), "label", ("sentence",), ("0", "1"), ("accuracy",)),
    "mrpc": GlueTask("mrpc", ("#1 String", "#2 String"), "Quality", ("sentence1", "sentence2"), ("0", "1"),
                     ("accuracy", "f1")),
    "qqp": GlueTask("qqp", ("question1", "question2"), "is_duplicate", ("question1", "question2"), ("0", "1"),
                    ("accuracy", "f1")),
    "stsb": GlueTask("stsb", ("sentence1", "sentence2"), "score", ("sentence1", "sentence2"), (),
                     ("pearson", "spearman")),
    "mnli": GlueTask("mnli", ("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"),
                     ("entailment", "neutral", "contradiction"), ("accuracy",),
                     eval_splits=("validation_matched", "validation_mismatched")),
    "qnli": GlueTask("qnli", ("question", "sentence"), "label", ("question", "sentence"),
                     ("entailment", "not_entailment"), ("accuracy",)),
    "rte": GlueTask("rte", ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"),
                    ("entailment", "not_entailment"), ("accuracy",)),
    "wnli": GlueTask("wnli", ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"), ("0", "1"),
                     ("accuracy",)),
}


@dataclasses.dataclass(frozen=True)
class TextExample:
  """One or two texts and a label (class id, or a float score for regression)."""

  texts: tuple[str, ...]
  label: float


def read_tsv(path: str, task: GlueTask) -> list[TextExample]:
  """A GLUE TSV file; a malformed line or an unknown label is an error naming file and line."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"data file not found: {path}")
  label_ids = {name: i for i, name in enumerate(task.labels)}
  examples = []
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  columns = None
  if task.tsv_header:
    if not lines:
      raise ValueError(f"{path}: empty file, expected a header line")
    header = lines[0].rstrip("\r").split("\t")
    wanted = (*task.tsv_text_columns, task.tsv_label_column)
    missing = [c for c in wanted if c not in header]
    if missing:
      raise ValueError(f"{path}:1: header lacks column(s) {missing} needed for GLUE {task.name} (has {header})")
    columns = {name: header.index(name) for name in wanted}
    lines = lines[1:]
  first_line = 2 if task.tsv_header else 1
  for number, line in enumerate(lines, start=first_line):
    fields = line.rstrip("\r").split("\t")
    index = (lambda c: columns[c]) if columns else (lambda c: c)
    needed = max(index(c) for c in (*task.tsv_text_columns, task.tsv_label_column)) + 1
    if len(fields) < needed:
      raise ValueError(f"{path}:{number}: expected at least {needed} tab-separated fields, found {len(fields)}")
    texts = tuple(fields[index(c)].strip() for c in task.tsv_text_columns)
    raw_label = fields[index(task.tsv_label_column)].strip()
    if task.is_regression:
      try:
        label = float(raw_label)
      except ValueError:
        raise ValueError(f"{path}:{number}: label {raw_label!r} is not a number") from None
    else:
      if raw_label not in label_ids:
        raise ValueError(f"{path}:{number}: label {raw_label!r} is not one of {list(task.labels)}")
      label = float(label_ids[raw_label])
    examples.append(TextExample(texts, label))
  if not examples:
    raise ValueError(f"{path}: no examples")
  return examples


def read_tfds(task: GlueTask, split: str, data_dir: str) -> list[TextExample]:
  """The TFDS `glue/NAME` split; unlabelled rows (label -1, the test splits) are an error."""
  source = tfds.data_source(f"glue/{task.name}", split=split, data_dir=data_dir)
  examples = []
  for i in range(len(source)):
    record = source[i]
    texts = tuple(_text(record[field]) for field in task.tfds_text_fields)
    label = float(record["label"])
    if not task.is_regression and label < 0:
      raise ValueError(f"glue/{task.name}[{split}] record {i} has no label (test splits are unlabelled)")
    examples.append(TextExample(texts, label))
  return examples


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
