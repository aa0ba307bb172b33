"""grain pipelines for pretraining: tokenize documents, cut them into sequences, pack, batch.

A document's sentences (lines) are tokenized and greedily grouped into sequences of at most
`max_seq_len - 2` tokens, each wrapped as [CLS] ... [SEP]; sequences are then first-fit packed into
rows of `max_seq_len` with `segment_ids` (1, 2, ... per sequence, 0 = padding) and `positions`
that restart at 0 in each sequence. The training stream shards documents by process, shuffles
them with a seed (a new order each epoch), repeats forever, and its iterator state is a small
JSON dict that checkpoints store, so a resumed run reads exactly the batches it would have read.

With a sentence objective (`nsp`, BERT's next-sentence prediction, or `sop`, ALBERT's sentence-order
prediction) each sequence is instead a pair `[CLS] A [SEP] B [SEP]` (token types 0, then 1 from B on)
labelled at its [CLS] (`DocumentToSentencePairs`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence

import grain
import numpy as np
from grain.experimental import FirstFitPackIterDataset, FlatMapIterDataset, FlatMapTransform

from flaxlm.data.tokenizer import Tokenizer

SEQUENCE_FEATURES = ("input_ids", "token_type_ids", "word_start")  # Per token, before packing.
FEATURES = ("input_ids", "segment_ids", "positions", "token_type_ids", "word_start")
SENTENCE_OBJECTIVES = ("none", "nsp", "sop")
# `sentence_labels` at a pair's [CLS] (0 at every other token): B follows A, or it does not (NSP: B
# comes from another document; SOP: A and B are swapped). Minus one, these are BERT's NSP class ids.
FOLLOWS, DOES_NOT_FOLLOW = 1, 2


def features(sentence_objective: str = "none") -> tuple[str, ...]:
  """Batch features of a pretraining stream; a sentence objective adds `sentence_labels`."""
  return FEATURES + _sequence_features(sentence_objective)[len(SEQUENCE_FEATURES):]


def _sequence_features(sentence_objective: str) -> tuple[str, ...]:
  return SEQUENCE_FEATURES + (("sentence_labels",) if sentence_objective != "none" else ())


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


class DocumentToSentencePairs(DocumentToSequences):
  """(stream position, document index, document) -> `[CLS] A [SEP] B [SEP]` pairs labelled at [CLS].

  The document's lines (long ones cut into pieces that fit) are grouped greedily into chunks of at
  most max_seq_len - 3 tokens; each chunk is split at a random line boundary into A and B (a chunk
  of one line at a random token, since our corpora often put a paragraph on a line). NSP, as BERT:
  half the time B is replaced by a run of another document starting at a random line, and the
  replaced lines go back to start the next chunk. SOP, as ALBERT: half the time A and B swap.
  A random B has the length of the B it replaces, so the pair's length gives nothing away. Every
  choice comes from a generator seeded with (seed, process, position in the stream), so a
  resumed stream rebuilds exactly the pairs it would have built.
  """

  def __init__(self, tokenizer: Tokenizer, max_seq_len: int, objective: str, documents, seed: int,
               process_index: int = 0):
    super().__init__(tokenizer, max_seq_len)
    if objective not in SENTENCE_OBJECTIVES[1:]:
      raise ValueError(f"sentence objective {objective!r} is not 'nsp' or 'sop'")
    if objective == "nsp" and len(documents) < 2:
      raise ValueError(f"next-sentence prediction draws B from another document, but {documents!r} has "
                       f"{len(documents)} document(s)")
    self._max_tokens = max_seq_len - 3
    self._objective = objective
    self._documents = documents
    self._seed = (seed, process_index)

  def _pieces(self, lines: Sequence[str]) -> list[list[int]]:
    pieces = []
    for tokens in self._tokenizer.encode_batch(lines) if lines else []:
      pieces.extend(tokens[i:i + self._max_tokens] for i in range(0, len(tokens), self._max_tokens))
    return pieces

  def flat_map(self, element) -> list[dict[str, np.ndarray]]:
    position, doc_index, document = element
    rng = np.random.default_rng([*self._seed, position])
    pending = collections.deque(self._pieces([line for line in document.split("\n") if line.strip()]))
    out = []
    while pending:
      chunk, size = [], 0
      while pending and size + len(pending[0]) <= self._max_tokens:
        size += len(pending[0])
        chunk.append(pending.popleft())
      if size < 2:
        continue  # A single token cannot be split into A and B.
      if len(chunk) > 1:
        cut = int(rng.integers(1, len(chunk)))
        a_pieces, b_pieces = chunk[:cut], chunk[cut:]
      else:
        cut = int(rng.integers(1, size))
        a_pieces, b_pieces = [chunk[0][:cut]], [chunk[0][cut:]]
      a, b = sum(a_pieces, []), sum(b_pieces, [])
      label = FOLLOWS
      if rng.random() < 0.5:
        label = DOES_NOT_FOLLOW
        if self._objective == "nsp":
          b = self._random_run(rng, doc_index, len(b))
          pending.extendleft(reversed(b_pieces))
        else:
          a, b = b, a
      out.append(self._pair(a, b, label))
    return out

  def _random_run(self, rng, doc_index: int, length: int) -> list[int]:
    """`length` tokens from a random line of a random other document on, continuing into the next
    documents if it ends first."""
    n = len(self._documents)
    other = int(rng.integers(n - 1))
    other += other >= doc_index  # Any document but this one, uniformly.
    tokens: list[int] = []
    for _ in range(n - 1):
      lines = [line for line in self._documents[other].split("\n") if line.strip()]
      start = int(rng.integers(len(lines))) if lines and not tokens else 0
      for line in lines[start:]:
        tokens.extend(self._tokenizer.encode(line))
        if len(tokens) >= length:
          return tokens[:length]
      other = (other + 1) % n
      other = (other + 1) % n if other == doc_index else other
    if not tokens:
      raise ValueError(f"no document but #{doc_index} of {self._documents!r} has any tokens")
    return tokens  # All the other documents together are shorter than B.

  def _pair(self, a: list[int], b: list[int], label: int) -> dict[str, np.ndarray]:
    ids = np.array([self._tokenizer.cls_id, *a, self._tokenizer.sep_id, *b, self._tokenizer.sep_id], np.int32)
    token_types = (np.arange(len(ids)) > len(a) + 1).astype(np.int32)
    labels = np.zeros_like(ids)
    labels[0] = label
    return {"input_ids": ids, "token_type_ids": token_types, "word_start": self._word_start[ids],
            "sentence_labels": labels}


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


def _sequences(docs: grain.MapDataset, tokenizer: Tokenizer, max_seq_len: int, sentence_objective: str, seed: int,
               process_index: int, shuffle: bool) -> grain.IterDataset:
  """This process's documents (shuffled and repeated for training) -> sequences, or pairs."""
  if sentence_objective == "none":
    stream = docs.shuffle(seed=seed).repeat() if shuffle else docs
    return FlatMapIterDataset(stream.to_iter_dataset(), DocumentToSequences(tokenizer, max_seq_len))
  # Pairs draw their randomness from the stream position and sample B from the document list, so
  # each element carries both its position and its index in the list.
  stream = docs.map_with_index(lambda index, text: (index, text))
  stream = stream.shuffle(seed=seed).repeat() if shuffle else stream
  stream = stream.map_with_index(lambda position, indexed: (position, *indexed))
  return FlatMapIterDataset(stream.to_iter_dataset(), DocumentToSentencePairs(
      tokenizer, max_seq_len, sentence_objective, docs, seed, process_index))


def train_batches(documents, tokenizer: Tokenizer, *, max_seq_len: int, batch_size: int, seed: int,
                  packing_bins: int, process_index: int = 0, process_count: int = 1,
                  sentence_objective: str = "none") -> grain.DatasetIterator:
  """Endless, checkpointable iterator of this process's packed pretraining batches (numpy dicts [B, L])."""
  docs = grain.MapDataset.source(documents)[process_index::process_count]
  if len(docs) == 0:
    raise ValueError(f"{documents!r} has no documents for process {process_index} of {process_count}")
  sequences = _sequences(docs, tokenizer, max_seq_len, sentence_objective, seed, process_index, shuffle=True)
  rows = _rows(sequences, _sequence_features(sentence_objective), max_seq_len, packing_bins, seed, train=True,
               packed=True)
  return iter(rows.batch(batch_size, drop_remainder=True))


def eval_batches(documents, tokenizer: Tokenizer, *, max_seq_len: int, batch_size: int, packing_bins: int,
                 process_index: int = 0, process_count: int = 1,
                 sentence_objective: str = "none") -> Iterator[dict[str, np.ndarray]]:
  """One pass over this process's share of the eval documents; the last batch is padded, not dropped."""
  docs = grain.MapDataset.source(documents)[process_index::process_count]
  sequences = _sequences(docs, tokenizer, max_seq_len, sentence_objective, 0, process_index, shuffle=False)
  yield from _one_pass(_rows(sequences, _sequence_features(sentence_objective), max_seq_len, packing_bins, 0,
                             train=False, packed=True), batch_size)


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


# ----------------------------------------------------------------------------- generative objectives


class DocumentToChunks(FlatMapTransform):
  """(stream position, document) -> examples for a causal or denoising objective.

  The whole document is tokenized at once (newlines and spacing survive a byte-level BPE), wrapped as
  bos ... eos (eos only when the vocabulary has no bos), and cut into chunks of at most `chunk_tokens`; `make_example(chunk, rng)` turns each chunk
  into a dict of per-token arrays (identity for a causal LM, a noising function for T5 / BART). The
  generator is seeded with (seed, process, stream position), so a resumed stream rebuilds the same examples.
  """

  max_fan_out = 65536

  def __init__(self, tokenizer: Tokenizer, chunk_tokens: int, make_example, seed: int, process_index: int = 0,
               permute_lines=None):
    self._tokenizer = tokenizer
    self._chunk_tokens = chunk_tokens
    self._make_example = make_example
    self._seed = (seed, process_index)
    self._permute_lines = permute_lines

  def flat_map(self, element) -> list[dict[str, np.ndarray]]:
    position, document = element
    rng = np.random.default_rng([*self._seed, position])
    if self._permute_lines is None:
      body = self._tokenizer.encode(document)
    else:  # `permute_lines(token lists, rng)` reorders the document's lines (BART's sentence permutation).
      lines = [line for line in document.split("\n") if line.strip()]
      body = list(self._permute_lines(self._tokenizer.encode_batch(lines) if lines else [], rng))
    bos = [] if self._tokenizer.bos_id is None else [self._tokenizer.bos_id]  # T5's vocabulary has no bos.
    ids = [*bos, *body, self._tokenizer.eos_id]
    chunks = [ids[i:i + self._chunk_tokens] for i in range(0, len(ids), self._chunk_tokens)]
    examples = (self._make_example(np.array(chunk, np.int32), rng) for chunk in chunks if len(chunk) >= 2)
    return [e for e in examples if e is not None]  # make_example returns None for a chunk it cannot use.


def packed_rows(examples: grain.IterDataset, lengths: dict[str, int], packing_bins: int, seed: int,
                train: bool) -> grain.IterDataset:
  """First-fit packing of examples with several per-token features of their own lengths (`lengths`).

  Every feature gets `NAME_segment_ids` and `NAME_positions`; an example has the same segment id in
  each feature, so an encoder-decoder pair stays matched across the source and target rows.
  """
  return FirstFitPackIterDataset(examples, length_struct=lengths, num_packing_bins=packing_bins, seed=seed,
                                 shuffle_bins=train)


def document_batches(documents, to_examples: FlatMapTransform, lengths: dict[str, int], to_features, *,
                     batch_size: int, seed: int, packing_bins: int, train: bool, process_index: int = 0,
                     process_count: int = 1):
  """This process's documents -> packed rows -> `to_features(row)` -> batches: endless, shuffled and
  checkpointable when `train`, else one pass whose last batch is padded."""
  docs = grain.MapDataset.source(documents)[process_index::process_count]
  if len(docs) == 0:
    raise ValueError(f"{documents!r} has no documents for process {process_index} of {process_count}")
  stream = docs.shuffle(seed=seed).repeat() if train else docs
  stream = stream.map_with_index(lambda position, text: (position, text))
  rows = packed_rows(FlatMapIterDataset(stream.to_iter_dataset(), to_examples), lengths, packing_bins, seed, train)
  rows = rows.map(to_features)
  if train:
    return iter(rows.batch(batch_size, drop_remainder=True))
  return _one_pass(rows, batch_size)


def packed_example_batches(examples: list[dict[str, np.ndarray]], lengths: dict[str, int], to_features, *,
                           batch_size: int, seed: int, packing_bins: int, train: bool, process_index: int = 0,
                           process_count: int = 1):
  """Encoded examples with features of several lengths (source and target) -> packed rows ->
  `to_features(row)` -> batches; endless, shuffled each epoch and checkpointable when `train`, else one
  pass in order."""
  ds = grain.MapDataset.source(examples)[process_index::process_count]
  if len(ds) == 0:
    raise ValueError(f"no examples for process {process_index} of {process_count}")
  ds = (ds.shuffle(seed=seed).repeat() if train else ds).to_iter_dataset()
  rows = packed_rows(ds, lengths, packing_bins, seed, train).map(to_features)
  if train:
    return iter(rows.batch(batch_size, drop_remainder=True))
  return _one_pass(rows, batch_size)


class ShardedBatches:
  """This process's rows of the global batch, built from several independent input streams.

  Shard s (of `shard_count`) reads its own slice of the data; the global batch is every shard's
  rows in shard order, and a process owns a contiguous run of shards, so the same `data.shards`
  gives the same global batches on one host or many. The state is one entry per shard.
  """

  def __init__(self, make_shard, shard_ids: list[int], shard_count: int):
    self.shard_ids = shard_ids
    self._iterators = [make_shard(s, shard_count) for s in shard_ids]

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    parts = [next(it) for it in self._iterators]
    if len(parts) == 1:
      return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self) -> dict:
    """One iterator state per shard, keyed by shard id (JSON-able)."""
    return {"shards": {str(s): it.get_state() for s, it in zip(self.shard_ids, self._iterators)}}

  def set_state(self, state: dict) -> None:
    """Restores every shard's position; a state from another sharding is an error."""
    saved = state.get("shards", {})
    if set(saved) != {str(s) for s in self.shard_ids}:
      raise ValueError(f"the checkpoint's data position is for shards {sorted(saved)}, this process reads "
                       f"{self.shard_ids}: keep data.shards and the number of processes as they were")
    for s, it in zip(self.shard_ids, self._iterators):
      it.set_state(saved[str(s)])


def process_shards(shards: int, process_index: int, process_count: int) -> list[int]:
  """The contiguous run of shard ids process `process_index` reads (shards 0 means one each)."""
  shards = shards or process_count
  if shards % process_count:
    raise ValueError(f"config.data.shards={shards} cannot be split evenly over {process_count} processes")
  per_process = shards // process_count
  return list(range(process_index * per_process, (process_index + 1) * per_process))
