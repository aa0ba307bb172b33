"""grain pipelines for pretraining: tokenize documents, cut them into sequences, pack, batch.

A document's sentences (lines) are tokenized and greedily grouped into sequences of at most
`max_seq_len - 2` tokens, each wrapped as [CLS] ... [SEP]; sequences are then first-fit packed into
rows of `max_seq_len` with `segment_ids` (1, 2, ... per sequence, 0 = padding) and `positions`
that restart at 0 in each sequence. The training stream shards documents by process, shuffles
them with a seed (a new order each epoch), repeats forever, and its iterator state is a small
JSON dict that checkpoints store, so a resumed run reads exactly the batches it would have read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import grain
import numpy as np
from grain.experimental import FirstFitPackIterDataset, FlatMapIterDataset, FlatMapTransform

from flaxlm.data.tokenizer import Tokenizer

SEQUENCE_FEATURES = ("input_ids", "token_type_ids", "word_start")  # Per token, before packing.
FEATURES = ("input_ids", "segment_ids", "positions", "token_type_ids", "word_start")


def split_into_sequences(sentences: Sequence[Sequence[int]], max_tokens: int) -> list[list[int]]:
  """Greedy grouping of consecutive sentences into sequences of at most `max_tokens` tokens.

  A sentence longer than `max_tokens` is cut into pieces of `max_tokens`.
  """
  sequences: list[list[int]] = []
  current: list[int] = []
  for sentence in sentences:
    sentence = list(sentence)
    if len(current) + len(sentence) > max_tokens and current:
      sequences.append(current)
      current = []
    while len(sentence) > max_tokens:
      sequences.append(sentence[:max_tokens])
      sentence = sentence[max_tokens:]
    current.extend(sentence)
  if current:
    sequences.append(current)
  return sequences


class DocumentToSequences(FlatMapTransform):
  """One document (str, one sentence a line) -> [CLS] ... [SEP] sequences with word-start flags."""

  # A record has at most 256 lines, so a few hundred sequences at most even at short lengths.
  max_fan_out = 65536

  def __init__(self, tokenizer: Tokenizer, max_seq_len: int):
    self._tokenizer = tokenizer
    self._max_tokens = max_seq_len - 2
    self._word_start = tokenizer.word_start_table().astype(np.int32)

  def flat_map(self, document: str) -> list[dict[str, np.ndarray]]:
    sentences = [line for line in document.split("\n") if line.strip()]
    if not sentences:
      return []
    out = []
    for tokens in split_into_sequences(self._tokenizer.encode_batch(sentences), self._max_tokens):
      ids = np.array([self._tokenizer.cls_id, *tokens, self._tokenizer.sep_id], dtype=np.int32)
      out.append({"input_ids": ids, "token_type_ids": np.zeros_like(ids), "word_start": self._word_start[ids]})
    return out


def _packed_row(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """grain's packing outputs -> batch features: per-token arrays plus segment_ids and positions."""
  out = {k: v for k, v in row.items() if not k.endswith(("_segment_ids", "_positions"))}
  out["segment_ids"] = row["input_ids_segment_ids"].astype(np.int32)
  out["positions"] = row["input_ids_positions"].astype(np.int32)
  return out


def pad_example(example: dict[str, np.ndarray], max_seq_len: int) -> dict[str, np.ndarray]:
  """One example alone in a row of max_seq_len: zero padding, segment 1 over its tokens."""
  n = len(example["input_ids"])
  out = {k: np.pad(v, (0, max_seq_len - n)) for k, v in example.items()}
  out["segment_ids"] = (np.arange(max_seq_len) < n).astype(np.int32)
  out["positions"] = np.where(out["segment_ids"] > 0, np.arange(max_seq_len), 0).astype(np.int32)
  return out


def pad_batch(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Pads a short final batch with all-padding rows (segment 0: no tokens count)."""
  rows = next(iter(batch.values())).shape[0]
  if rows == batch_size:
    return batch
  return {k: np.concatenate([v, np.zeros((batch_size - rows, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def _rows(examples: grain.IterDataset, features, max_seq_len: int, packing_bins: int, seed: int, train: bool,
          packed: bool) -> grain.IterDataset:
  if not packed:
    return examples.map(lambda e: pad_example(e, max_seq_len))
  lengths = {name: max_seq_len for name in features}
  return FirstFitPackIterDataset(examples, length_struct=lengths, num_packing_bins=packing_bins, seed=seed,
                                 shuffle_bins=train).map(_packed_row)


def _one_pass(rows: grain.IterDataset, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  for batch in rows.batch(batch_size, drop_remainder=False):
    yield pad_batch(batch, batch_size)


def train_batches(documents, tokenizer: Tokenizer, *, max_seq_len: int, batch_size: int, seed: int,
                  packing_bins: int, process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """Endless, checkpointable iterator of this process's packed pretraining batches (numpy dicts [B, L])."""
  docs = grain.MapDataset.source(documents)[process_index::process_count]
  if len(docs) == 0:
    raise ValueError(f"{documents!r} has no documents for process {process_index} of {process_count}")
  docs = docs.shuffle(seed=seed).repeat()
  sequences = FlatMapIterDataset(docs.to_iter_dataset(), DocumentToSequences(tokenizer, max_seq_len))
  rows = _rows(sequences, SEQUENCE_FEATURES, max_seq_len, packing_bins, seed, train=True, packed=True)
  return iter(rows.batch(batch_size, drop_remainder=True))


def eval_batches(documents, tokenizer: Tokenizer, *, max_seq_len: int, batch_size: int, packing_bins: int,
                 process_index: int = 0, process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this process's share of the eval documents; the last batch is padded, not dropped."""
  docs = grain.MapDataset.source(documents)[process_index::process_count]
  sequences = FlatMapIterDataset(docs.to_iter_dataset(), DocumentToSequences(tokenizer, max_seq_len))
  yield from _one_pass(_rows(sequences, SEQUENCE_FEATURES, max_seq_len, packing_bins, 0, train=False, packed=True),
                       batch_size)


def example_train_batches(examples: list[dict[str, np.ndarray]], *, max_seq_len: int, batch_size: int, seed: int,
                          packed: bool, packing_bins: int, process_index: int = 0,
                          process_count: int = 1) -> grain.DatasetIterator:
  """Endless, checkpointable batches of encoded fine-tuning examples, shuffled each epoch.

  Packed, several examples share a row (each with its own segment id and positions); unpacked,
  each example is padded to max_seq_len alone.
  """
  ds = grain.MapDataset.source(examples)[process_index::process_count]
  if len(ds) == 0:
    raise ValueError(f"no training examples for process {process_index} of {process_count}")
  ds = ds.shuffle(seed=seed).repeat().to_iter_dataset()
  rows = _rows(ds, examples[0].keys(), max_seq_len, packing_bins, seed, train=True, packed=packed)
  return iter(rows.batch(batch_size, drop_remainder=True))


def example_eval_batches(examples: list[dict[str, np.ndarray]], *, max_seq_len: int, batch_size: int, packed: bool,
                         packing_bins: int, process_index: int = 0,
                         process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this process's share of the examples, in order; the last batch is padded."""
  ds = grain.MapDataset.source(examples)[process_index::process_count].to_iter_dataset()
  yield from _one_pass(_rows(ds, examples[0].keys(), max_seq_len, packing_bins, 0, train=False, packed=packed),
                       batch_size)
