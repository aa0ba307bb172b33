"""WordPiece tokenization through Hugging Face `tokenizers`: train a vocab or load a BERT vocab.txt."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers.implementations import BertWordPieceTokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SPECIAL_RE = re.compile(r"^\[[^\]]+\]$")  # [PAD], [unused12], ...: never produced from text.


class Tokenizer:
  """A BERT WordPiece tokenizer over a vocab.txt, with the ids and tables the MLM task needs."""

  def __init__(self, vocab_file: str, lowercase: bool = True):
    if not os.path.isfile(vocab_file):
      raise FileNotFoundError(f"vocab file not found: {vocab_file}")
    self.vocab_file = vocab_file
    self.lowercase = lowercase
    with open(vocab_file, encoding="utf-8") as f:
      self.vocab = [line.rstrip("\n") for line in f]
    index = {token: i for i, token in enumerate(self.vocab)}
    missing = [t for t in SPECIAL_TOKENS if t not in index]
    if missing:
      raise ValueError(f"vocab file {vocab_file} lacks the special tokens {missing}")
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (index[t] for t in SPECIAL_TOKENS)
    # strip_accents=None follows lowercase, as BERT's uncased and cased vocabularies expect.
    self._tokenizer = BertWordPieceTokenizer(vocab_file, lowercase=lowercase, strip_accents=None,
                                             clean_text=True, handle_chinese_chars=True)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without [CLS]/[SEP]."""
    return self._tokenizer.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without [CLS]/[SEP] (tokenized in parallel by the Rust library)."""
    return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

  def tokens(self, ids: Iterable[int]) -> list[str]:
    """The vocab strings of `ids`."""
    return [self.vocab[i] for i in ids]

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, with WordPiece continuations joined."""
    return self._tokenizer.decode(list(ids))

  def special_table(self) -> np.ndarray:
    """bool[V]: tokens that never come from text ([PAD], [CLS], [unused0], ...)."""
    return np.array([bool(_SPECIAL_RE.match(t)) for t in self.vocab])

  def word_start_table(self) -> np.ndarray:
    """bool[V]: True where a token begins a word (not a `##` continuation), for whole-word masking."""
    return np.array([not t.startswith("##") for t in self.vocab])

  def word_starts(self, ids: np.ndarray) -> np.ndarray:
    """Word-start flag of each token id."""
    return self.word_start_table()[np.asarray(ids)]


def train_vocab(texts: Iterable[str], vocab_size: int, lowercase: bool, out_file: str) -> str:
  """Trains a WordPiece vocab on `texts` and writes it as a BERT vocab.txt to `out_file`."""
  trainer = BertWordPieceTokenizer(lowercase=lowercase, strip_accents=None, clean_text=True,
                                   handle_chinese_chars=True)
  trainer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2,
                              special_tokens=list(SPECIAL_TOKENS), show_progress=False)
  os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
  # Write to a temporary file first so a crash never leaves a half-written cached vocab.
  with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out_file))) as tmp:
    written = trainer.save_model(tmp)[0]
    with open(written, encoding="utf-8") as f:
      tokens = [line.rstrip("\n") for line in f]
    # The trainer lists its initial alphabet in hash order, which changes from run to run; WordPiece
    # only needs the set, so sorting makes the same corpus give the same vocab (and ids) everywhere.
    rest = sorted(t for t in tokens if t not in SPECIAL_TOKENS)
    with open(written, "w", encoding="utf-8") as f:
      f.write("\n".join([*SPECIAL_TOKENS, *rest]) + "\n")
    os.replace(written, out_file)
  return out_file


def cached_vocab(texts_fn, corpus_id: str, vocab_size: int, lowercase: bool, cache_dir: str) -> str:
  """Path of a trained vocab for this corpus and settings, training it on first use.

  `texts_fn` is only called when the vocab is not cached yet.
  """
  key = hashlib.sha256(f"{corpus_id}|{vocab_size}|{lowercase}|{tokenizers.__version__}|sorted".encode()).hexdigest()
  path = os.path.join(cache_dir, "vocab", f"wordpiece-{vocab_size}-{key[:16]}.txt")
  if not os.path.isfile(path):
    train_vocab(texts_fn(), vocab_size, lowercase, path)
  return path
