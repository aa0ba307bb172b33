"""WordPiece tokenization against hand-worked examples on a hand-made vocab, and vocab training."""

import numpy as np
import pytest

from flaxlm.data import sources
from flaxlm.data.tokenizer import SPECIAL_TOKENS, Tokenizer, cached_vocab, train_vocab

VOCAB = [*SPECIAL_TOKENS, "[unused0]", "un", "##aff", "##able", "the", "cafe", "café", "is", "open", ",", ".",
         "Café", "The", "##s", "dog", "run", "##ning", "!", "'", "t", "don"]


@pytest.fixture
def vocab_file(tmp_path):
  path = tmp_path / "vocab.txt"
  path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
  return str(path)


def test_uncased_wordpiece_hand_worked(vocab_file):
  tok = Tokenizer(vocab_file, lowercase=True)
  # Lowercasing strips accents in uncased BERT: Café -> cafe; unknown words become [UNK].
  assert tok.tokens(tok.encode("The Café is unaffable, don't!")) == \
      ["the", "cafe", "is", "un", "##aff", "##able", ",", "don", "'", "t", "!"]
  assert tok.tokens(tok.encode("dogs running zebra")) == ["dog", "##s", "run", "##ning", "[UNK]"]
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)


def test_cased_keeps_case_and_accents(vocab_file):
  tok = Tokenizer(vocab_file, lowercase=False)
  assert tok.tokens(tok.encode("The Café is open.")) == ["The", "Café", "is", "open", "."]
  assert tok.tokens(tok.encode("the café")) == ["the", "café"]


def test_mask_token_in_text_is_one_token(vocab_file):
  tok = Tokenizer(vocab_file)
  assert tok.encode("the [MASK] is open") == [VOCAB.index("the"), tok.mask_id, VOCAB.index("is"), VOCAB.index("open")]


def test_word_start_and_special_tables(vocab_file):
  tok = Tokenizer(vocab_file)
  ids = tok.encode("unaffable dogs")
  np.testing.assert_array_equal(tok.word_starts(ids), [True, False, False, True, False])
  special = tok.special_table()
  assert special[:6].all() and not special[6:].any()  # [PAD] .. [MASK] and [unused0]


def test_missing_vocab_and_missing_specials_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    Tokenizer(str(tmp_path / "nope.txt"))
  bad = tmp_path / "bad.txt"
  bad.write_text("[PAD]\nhello\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"bad.txt lacks the special tokens \['\[UNK\]'"):
    Tokenizer(str(bad))


def test_trained_vocab_tokenizes_its_corpus(tmp_path):
  texts = ["the quick brown fox jumps over the lazy dog"] * 50 + ["a lazy fox naps in the sun"] * 50
  path = train_vocab(texts, vocab_size=200, lowercase=True, out_file=str(tmp_path / "v" / "vocab.txt"))
  tok = Tokenizer(path)
  assert tok.vocab[:5] == list(SPECIAL_TOKENS)
  assert tok.tokens(tok.encode("The lazy fox")) == ["the", "lazy", "fox"]
  assert tok.unk_id not in tok.encode("quick brown dog naps")


def test_vocab_training_is_deterministic(tmp_path):
  # The trainer walks a hash map; on real text the result must still be the same file every time.
  with open(sources.python_docs_corpus(), encoding="utf-8") as f:
    texts = f.read().split("\n\n")[:3000]
  a = train_vocab(texts, vocab_size=1000, lowercase=True, out_file=str(tmp_path / "a.txt"))
  b = train_vocab(texts, vocab_size=1000, lowercase=True, out_file=str(tmp_path / "b.txt"))
  with open(a, encoding="utf-8") as fa, open(b, encoding="utf-8") as fb:
    assert fa.read() == fb.read()


def test_cached_vocab_trains_once(tmp_path):
  calls = []

  def texts():
    calls.append(1)
    return ["hello world again and again"] * 20

  a = cached_vocab(texts, "corpus-1", 150, True, str(tmp_path))
  b = cached_vocab(texts, "corpus-1", 150, True, str(tmp_path))
  c = cached_vocab(texts, "corpus-2", 150, True, str(tmp_path))
  assert a == b != c and len(calls) == 2


# ----------------------------------------------------------------------------- byte-level BPE


def test_bytelevel_bpe_round_trips_real_text_exactly(tmp_path):
  import os
  from conftest import SHARED_DATA
  from flaxlm.data.tokenizer import train_bytelevel_bpe
  pairs = [os.path.join(SHARED_DATA, "multi30k", f"val.{lang}") for lang in ("de", "en")]
  if not all(os.path.isfile(p) for p in pairs):
    pytest.skip("needs ../shared/data/multi30k")
  lines = [line.rstrip("\n") for p in pairs for line in open(p, encoding="utf-8")]
  path = train_bytelevel_bpe(lines, 600, str(tmp_path / "bpe.json"), num_sentinels=3)
  tok = Tokenizer(path)
  # RoBERTa's five roles first, then the sentinels, as T5 names them.
  assert tok.vocab[:8] == ["<pad>", "<unk>", "<s>", "</s>", "<mask>", "<extra_id_0>", "<extra_id_1>", "<extra_id_2>"]
  assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id, tok.sentinel_ids) == (0, 1, 2, 3, 4, [5, 6, 7])
  assert tok.vocab_size == 600
  # Bytes: umlauts, punctuation, double spaces and newlines all come back exactly.
  for text in [*lines[:200], "Zwei  Männer\nstehen am Herd.", "ÄÖÜ äöü ß — “quoted” 3.5 t-shirt"]:
    assert tok.decode(tok.encode(text)) == text
  # A sentinel or mask written in the text is one token that takes the space before it (RoBERTa's <mask>).
  assert tok.tokens(tok.encode("a <extra_id_1> b")) == ["a", "<extra_id_1>", "Ġb"]
  masked = tok.tokens(tok.encode("the <mask> sat"))
  assert masked.count("<mask>") == 1 and masked[masked.index("<mask>") - 1] != "Ġ"
  # The same texts give the same file, so cached vocabs and their ids are reproducible.
  again = train_bytelevel_bpe(lines, 600, str(tmp_path / "bpe2.json"), num_sentinels=3)
  assert open(path, encoding="utf-8").read() == open(again, encoding="utf-8").read()


def test_tokenizer_json_with_partial_roles(tmp_path):
  """GPT-2 names one <|endoftext|> (bos and eos) and no pad/mask; a task needing a missing role says which."""
  import tokenizers
  from tokenizers import models, pre_tokenizers
  vocab = {"<|endoftext|>": 0, "a": 1, "b": 2, "Ġ": 3}
  tk = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.add_special_tokens(["<|endoftext|>"])
  path = str(tmp_path / "tokenizer.json")
  tk.save(path)
  tok = Tokenizer(path)
  assert (tok.bos_id, tok.eos_id, tok.mask_id, tok.sentinel_ids) == (0, 0, None, [])
  tok.require(("cls", "sep"), "causal language modelling")
  with pytest.raises(ValueError, match=r"text infilling needs the mask token\(s\), which .*tokenizer.json"):
    tok.require(("mask",), "text infilling")
