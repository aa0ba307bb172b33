"""Tokenization through Hugging Face `tokenizers`: train a WordPiece vocab, load a BERT vocab.txt, or load
any tokenizer.json (e.g. RoBERTa's byte-level BPE, from an imported checkpoint)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers.implementations import BertWordPieceTokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# RoBERTa's (and BART's) names for the same five roles, in the same order; a trained byte-level BPE has them.
BPE_SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")
ROLES = ("pad", "unk", "cls", "sep", "mask")
# Other tokenizer.json files name only some roles: GPT-2 has one <|endoftext|> (its bos and eos), T5 has no
# <s> or <mask>. Candidates per role, tried in order.
_ROLE_NAMES = {"pad": ("<pad>", "[PAD]"), "unk": ("<unk>", "[UNK]"), "cls": ("<s>", "[CLS]", "<|endoftext|>"),
               "sep": ("</s>", "[SEP]", "<|endoftext|>"), "mask": ("<mask>", "[MASK]")}
TOKENIZER_KINDS = ("wordpiece", "bytelevel_bpe")


def sentinel_token(i: int) -> str:
  """The i-th span-corruption sentinel, named as T5's vocabularies name them."""
  return f"<extra_id_{i}>"
_SPECIAL_RE = re.compile(r"^\[[^\]]+\]$")  # [PAD], [unused12], ...: never produced from text.


class Tokenizer:
  """A BERT WordPiece tokenizer over a vocab.txt, or the tokenizer a tokenizer.json describes, with the
  ids and tables the MLM task needs.

  A tokenizer.json carries its own normalizer, so `lowercase` only applies to a vocab.txt.
  """

  def __init__(self, vocab_file: str, lowercase: bool = True):
    if not os.path.isfile(vocab_file):
      raise FileNotFoundError(f"vocab file not found: {vocab_file}")
    self.vocab_file = vocab_file
    self.lowercase = lowercase
    self._added_specials: set[str] = set()
    self._word_start_prefix, self._continuation_prefix = None, "##"
    if vocab_file.endswith(".json"):
      self._load_tokenizer_json(vocab_file)
    else:
      with open(vocab_file, encoding="utf-8") as f:
        self.vocab = [line.rstrip("\n") for line in f]
    index = {token: i for i, token in enumerate(self.vocab)}
    if vocab_file.endswith(".json"):
      # A role the file does not name is None; a task that needs it says so (`require`).
      found = {role: next((index[n] for n in _ROLE_NAMES[role] if n in index), None) for role in ROLES}
      if found["pad"] is None:  # GPT-2 has no padding token; padding is never attended to or scored.
        found["pad"] = found["sep"] if found["sep"] is not None else 0
    else:
      missing = [t for t in SPECIAL_TOKENS if t not in index]
      if missing:
        raise ValueError(f"vocab file {vocab_file} lacks the special tokens {missing}")
      found = dict(zip(ROLES, (index[t] for t in SPECIAL_TOKENS)))
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (found[r] for r in ROLES)
    self.sentinel_ids = []
    while sentinel_token(len(self.sentinel_ids)) in index:
      self.sentinel_ids.append(index[sentinel_token(len(self.sentinel_ids))])
    if not vocab_file.endswith(".json"):
      # strip_accents=None follows lowercase, as BERT's uncased and cased vocabularies expect.
      # The vocab as a dict: handing the library a path goes through a deprecated reader.
      self._tokenizer = BertWordPieceTokenizer({t: i for i, t in enumerate(self.vocab)}, lowercase=lowercase,
                                               strip_accents=None,
                                               clean_text=True, handle_chinese_chars=True)

  def _load_tokenizer_json(self, path: str) -> None:
    self._tokenizer = tokenizers.Tokenizer.from_file(path)
    token_ids = self._tokenizer.get_vocab(with_added_tokens=True)
    if sorted(token_ids.values()) != list(range(len(token_ids))):
      raise ValueError(f"tokenizer file {path}: token ids are not 0..{len(token_ids) - 1}")
    self.vocab = [""] * len(token_ids)
    for token, i in token_ids.items():
      self.vocab[i] = token
    self._added_specials = {t.content for t in self._tokenizer.get_added_tokens_decoder().values() if t.special}
    # Which tokens begin a word, for whole-word masking: WordPiece marks continuations ("##"); byte-level
    # BPE and SentencePiece mark word starts instead (a leading space as "Ġ" or "▁").
    spec = json.loads(self._tokenizer.to_str())
    self._continuation_prefix = spec["model"].get("continuing_subword_prefix")
    if not self._continuation_prefix:
      described = json.dumps(spec.get("pre_tokenizer"))
      self._word_start_prefix = "Ġ" if "ByteLevel" in described else "▁" if "Metaspace" in described else None

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def bos_id(self):
    """Start of a sequence: [CLS] / <s> (GPT-2: <|endoftext|>)."""
    return self.cls_id

  @property
  def eos_id(self):
    """End of a sequence: [SEP] / </s> (GPT-2: <|endoftext|>)."""
    return self.sep_id

  def require(self, roles: Sequence[str], why: str) -> None:
    """Fails naming the tokenizer file when it has no token for one of `roles` (pad, unk, cls, sep, mask)."""
    missing = [r for r in roles if getattr(self, f"{r}_id") is None]
    if missing:
      raise ValueError(f"{why} needs the {', '.join(missing)} token(s), which {self.vocab_file} does not have")

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without [CLS]/[SEP]."""
    return self._tokenizer.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without [CLS]/[SEP] (tokenized in parallel by the Rust library)."""
    return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

  def encode_words(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token ids of pre-split words, and for each token the index of the word it came from."""
    encoding = self._tokenizer.encode(list(words), is_pretokenized=True, add_special_tokens=False)
    return encoding.ids, [-1 if w is None else w for w in encoding.word_ids]

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]], list[int]]:
    """Token ids of `text`, each token's (start, end) character span, and its word index.

    Words are the pre-tokenizer's: whitespace-separated, with punctuation split off.
    """
    encoding = self._tokenizer.encode(text, add_special_tokens=False)
    return encoding.ids, [tuple(o) for o in encoding.offsets], [-1 if w is None else w for w in encoding.word_ids]

  def tokens(self, ids: Iterable[int]) -> list[str]:
    """The vocab strings of `ids`."""
    return [self.vocab[i] for i in ids]

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, with WordPiece continuations joined."""
    return self._tokenizer.decode(list(ids))

  def special_table(self) -> np.ndarray:
    """bool[V]: tokens that never come from text ([PAD], [CLS], [unused0], <s>, ...)."""
    return np.array([bool(_SPECIAL_RE.match(t)) or t in self._added_specials for t in self.vocab])

  def word_start_table(self) -> np.ndarray:
    """bool[V]: True where a token begins a word (not a `##` continuation), for whole-word masking."""
    if self._continuation_prefix:
      return np.array([not t.startswith(self._continuation_prefix) for t in self.vocab])
    if self._word_start_prefix:
      return np.array([t.startswith(self._word_start_prefix) for t in self.vocab]) | self.special_table()
    return np.ones(len(self.vocab), bool)  # No word boundaries known: every token is its own word.

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


def train_bytelevel_bpe(texts: Iterable[str], vocab_size: int, out_file: str, num_sentinels: int = 0) -> str:
  """Trains a byte-level BPE (GPT-2/RoBERTa style) on `texts` and writes it as a tokenizer.json to `out_file`.

  Bytes, so every text (newlines, umlauts, emoji) round-trips exactly through encode and decode. The special
  tokens are RoBERTa's five roles, then `num_sentinels` span-corruption sentinels <extra_id_0>, ...
  """
  trainer = tokenizers.ByteLevelBPETokenizer(add_prefix_space=False)
  # <mask> and the sentinels take the space before them (as RoBERTa's <mask> does): in "a <mask> b" the mask
  # stands for a span that began with its own space, exactly as the noising functions replace spans.
  stripping = [tokenizers.AddedToken(t, lstrip=True, special=True)
               for t in (BPE_SPECIAL_TOKENS[4], *(sentinel_token(i) for i in range(num_sentinels)))]
  specials = [*BPE_SPECIAL_TOKENS[:4], *stripping]
  trainer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                              show_progress=False)
  os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
  with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(os.path.abspath(out_file)), delete=False,
                                   suffix=".json") as tmp:
    pass
  trainer.save(tmp.name)
  os.replace(tmp.name, out_file)  # Whole or not at all: a crash never leaves a half-written cached file.
  return out_file


def cached_vocab(texts_fn, corpus_id: str, vocab_size: int, lowercase: bool, cache_dir: str,
                 kind: str = "wordpiece", num_sentinels: int = 0) -> str:
  """Path of a trained vocab (WordPiece vocab.txt, or byte-level BPE tokenizer.json) for this corpus and
  settings, training it on first use.

  `texts_fn` is only called when the vocab is not cached yet.
  """
  if kind not in TOKENIZER_KINDS:
    raise ValueError(f"tokenizer kind {kind!r} is not one of {TOKENIZER_KINDS}")
  if kind == "wordpiece":
    key = hashlib.sha256(f"{corpus_id}|{vocab_size}|{lowercase}|{tokenizers.__version__}|sorted".encode()).hexdigest()
    path = os.path.join(cache_dir, "vocab", f"wordpiece-{vocab_size}-{key[:16]}.txt")
    if not os.path.isfile(path):
      train_vocab(texts_fn(), vocab_size, lowercase, path)
    return path
  key = hashlib.sha256(f"{corpus_id}|{vocab_size}|{num_sentinels}|{tokenizers.__version__}".encode()).hexdigest()
  path = os.path.join(cache_dir, "vocab", f"bytelevel-bpe-{vocab_size}-{key[:16]}.json")
  if not os.path.isfile(path):
    train_bytelevel_bpe(texts_fn(), vocab_size, path, num_sentinels)
  return path
