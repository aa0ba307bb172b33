"""CoNLL NER files: `word###TAG` tokens a line, or the classic columns (word first, tag last)."""

from __future__ import annotations

import dataclasses
import os

_SEPARATOR = "###"


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
  """Words and their IOB2 tags."""

  words: tuple[str, ...]
  tags: tuple[str, ...]


def read_conll(path: str) -> list[TaggedSentence]:
  """Sentences of a CoNLL file in either format (detected from the first non-empty line).

  `word###TAG` files hold one sentence a line; column files one token a line (word first, tag
  last) with blank lines between sentences and `-DOCSTART-` lines skipped. Tags must be IOB2
  (O, B-X, I-X); anything else is an error naming file and line.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"data file not found: {path}")
  with open(path, encoding="utf-8") as f:
    lines = [line.rstrip("\n").rstrip("\r") for line in f]
  first = next((line for line in lines if line.strip()), None)
  if first is None:
    raise ValueError(f"{path}: no sentences")
  inline = _SEPARATOR in first
  sentences = _read_inline(path, lines) if inline else _read_columns(path, lines)
  if not sentences:
    raise ValueError(f"{path}: no sentences")
  return sentences


def _check_tag(tag: str, path: str, number: int) -> str:
  if tag != "O" and not (len(tag) > 2 and tag[:2] in ("B-", "I-")):
    raise ValueError(f"{path}:{number}: tag {tag!r} is not IOB2 (O, B-TYPE or I-TYPE)")
  return tag


def _read_inline(path, lines) -> list[TaggedSentence]:
  sentences = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    words, tags = [], []
    for item in line.split():
      word, sep, tag = item.rpartition(_SEPARATOR)
      if not sep or not word:
        raise ValueError(f"{path}:{number}: token {item!r} is not word{_SEPARATOR}TAG")
      words.append(word)
      tags.append(_check_tag(tag, path, number))
    sentences.append(TaggedSentence(tuple(words), tuple(tags)))
  return sentences


def _read_columns(path, lines) -> list[TaggedSentence]:
  sentences, words, tags = [], [], []
  for number, line in enumerate([*lines, ""], start=1):
    fields = line.split()
    if not fields or fields[0] == "-DOCSTART-":
      if words:
        sentences.append(TaggedSentence(tuple(words), tuple(tags)))
        words, tags = [], []
      continue
    if len(fields) < 2:
      raise ValueError(f"{path}:{number}: expected a word and a tag, found {line!r}")
    words.append(fields[0])
    tags.append(_check_tag(fields[-1], path, number))
  return sentences


def label_set(sentences) -> tuple[str, ...]:
  """The tags of a corpus in a stable order: O first, then by entity type, B before I."""
  tags = {t for s in sentences for t in s.tags}
  return ("O", *sorted(tags - {"O"}, key=lambda t: (t[2:], t[0])))
