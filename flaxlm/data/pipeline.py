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
      out.append({"input_ids": ids, "word_start": self._word_start[ids]})
    return out


def _packed_row(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """grain's packing feature names -> the model's batch features."""
  return {
      "input_ids": row["input_ids"],
      "segment_ids": row["input_ids_segment_ids"].astype(np.int32),
      "positions": row["input_ids_positions"].astype(np.int32),
      "token_type_ids": np.zeros_like(row["input_ids"]),
      "word_start": row["word_start"],
  }


def _pack(sequences: grain.IterDataset, max_seq_len: int, bins: int, seed: int, shuffle: bool) -> grain.IterDataset:
  lengths = {"input_ids": max_seq_len, "word_start": max_seq_len}
  packed = FirstFitPackIterDataset(sequences, length_struct=lengths, num_packing_bins=bins, seed=seed,
                                   shuffle_bins=shuffle)
  return packed.map(_packed_row)


def train_batches(documents, tokenizer: Tokenizer, *, max_seq_len: int, batch_size: int, seed: int,
                  packing_bins: int, process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """Endless, checkpointable iterator of this process's packed training batches (numpy dicts [B, L])."""
  docs = grain.MapDataset.source(documents)[process_index::process_count]
  if len(docs) == 0:
    raise ValueError(f"{documents!r} has no documents for process {process_index} of {process_count}")
  docs = docs.shuffle(seed=seed).repeat()
  sequences = FlatMapIterDataset(docs.to_iter_dataset(), DocumentToSequences(tokenizer, max_seq_len))
  rows = _pack(sequences, max_seq_len, packing_bins, seed, shuffle=True)
  return iter(rows.batch(batch_size, drop_remainder=True))


def pad_batch(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Pads a short final batch with all-padding rows (segment 0: no tokens count)."""
  rows = next(iter(batch.values())).shape[0]
  if rows == batch_size:
    return batch
  return {k: np.concatenate([v, np.zeros((batch_size - rows, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}


def eval_batches(documents, tokenizer: Tokenizer, *, max_seq_len: int, batch_size: int, packing_bins: int,
                 process_index: int = 0, process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this process's share of the eval documents; the last batch is padded, not dropped."""
  docs = grain.MapDataset.source(documents)[process_index::process_count]
  sequences = FlatMapIterDataset(docs.to_iter_dataset(), DocumentToSequences(tokenizer, max_seq_len))
  rows = _pack(sequences, max_seq_len, packing_bins, seed=0, shuffle=False)
  for batch in rows.batch(batch_size, drop_remainder=False):
    yield pad_batch(batch, batch_size)
