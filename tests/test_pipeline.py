"""Sequence cutting, packing, sharding and checkpointable iteration of the grain pipeline."""

import numpy as np
import pytest

from flaxlm.data import pipeline, sources
from flaxlm.data.pipeline import split_into_sequences


def test_split_into_sequences_hand_worked():
  sentences = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10], list(range(11, 22))]
  assert split_into_sequences(sentences, 5) == [
      [1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15], [16, 17, 18, 19, 20], [21]]
  assert split_into_sequences([], 5) == []
  assert split_into_sequences([[1], [2]], 8) == [[1, 2]]


class ListSource:
  def __init__(self, docs):
    self.docs = docs

  def __len__(self):
    return len(self.docs)

  def __getitem__(self, i):
    return self.docs[i]


@pytest.fixture(scope="module")
def docs(tiny_config):
  source = sources.text_source(tiny_config.data, "train")
  return [source[i] for i in range(len(source))]


def _sequences_of(batch):
  """Each packed segment of each row, as a token list."""
  out = []
  for ids, seg, pos in zip(batch["input_ids"], batch["segment_ids"], batch["positions"]):
    for s in range(1, seg.max() + 1):
      where = seg == s
      out.append(ids[where].tolist())
      np.testing.assert_array_equal(pos[where], np.arange(where.sum()))
  return out


def test_eval_pass_covers_every_sequence_once_with_cls_sep(docs, tiny_tokenizer):
  L = 64
  expected = []
  cut = pipeline.DocumentToSequences(tiny_tokenizer, L)
  for d in docs:
    expected.extend(s["input_ids"].tolist() for s in cut.flat_map(d))
  got = []
  for batch in pipeline.eval_batches(ListSource(docs), tiny_tokenizer, max_seq_len=L, batch_size=16,
                                     packing_bins=8):
    assert batch["input_ids"].shape == (16, L)
    np.testing.assert_array_equal(batch["input_ids"][batch["segment_ids"] == 0], 0)
    np.testing.assert_array_equal(batch["word_start"],
                                  tiny_tokenizer.word_starts(batch["input_ids"]) * (batch["segment_ids"] > 0))
    got.extend(_sequences_of(batch))
  assert sorted(map(tuple, got)) == sorted(map(tuple, expected))
  for s in got:
    assert s[0] == tiny_tokenizer.cls_id and s[-1] == tiny_tokenizer.sep_id and len(s) <= L
  # Every token of the documents is there, in order, once (long sentences are cut, never dropped).
  text_tokens = sum(len(tiny_tokenizer.encode(line)) for d in docs for line in d.split("\n"))
  assert sum(len(s) - 2 for s in got) == text_tokens


def test_training_stream_resumes_exactly_from_saved_state(docs, tiny_tokenizer):
  def make():
    return pipeline.train_batches(ListSource(docs), tiny_tokenizer, max_seq_len=64, batch_size=8, seed=3,
                                  packing_bins=8)

  it = make()
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  resumed = make()
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for k in pipeline.FEATURES:
      np.testing.assert_array_equal(got[k], want[k])


def _stream_documents(it, tokenizer, n):
  """The first n packed sequences of a stream, decoded, in order."""
  out = []
  while len(out) < n:
    out.extend(tokenizer.decode(s) for s in _sequences_of(next(it)))
  return out[:n]


def test_training_stream_repeats_with_a_new_order_each_epoch(tiny_tokenizer):
  docs = [" ".join(["the"] * k) for k in range(1, 13)]

  def stream(seed):
    return pipeline.train_batches(ListSource(docs), tiny_tokenizer, max_seq_len=16, batch_size=1, seed=seed,
                                  packing_bins=1)

  rows = _stream_documents(stream(0), tiny_tokenizer, 24)
  first, second = rows[:12], rows[12:]
  assert sorted(first) == sorted(second) == sorted(docs)
  assert first != second
  assert _stream_documents(stream(0), tiny_tokenizer, 12) == first
  assert _stream_documents(stream(1), tiny_tokenizer, 12) != first


def test_processes_read_disjoint_documents(tiny_tokenizer):
  docs = [" ".join(["the"] * k) for k in range(1, 11)]
  seen = []
  for index in range(2):
    it = pipeline.train_batches(ListSource(docs), tiny_tokenizer, max_seq_len=16, batch_size=1, seed=0,
                                packing_bins=1, process_index=index, process_count=2)
    seen.append(set(_stream_documents(it, tiny_tokenizer, 5)))
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(docs)


def test_pad_batch_adds_empty_rows():
  batch = {"input_ids": np.ones((3, 4), np.int32), "segment_ids": np.ones((3, 4), np.int32)}
  padded = pipeline.pad_batch(batch, 5)
  assert padded["input_ids"].shape == (5, 4) and padded["segment_ids"][3:].sum() == 0
