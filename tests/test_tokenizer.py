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
