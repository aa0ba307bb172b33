"""Data: tokenizer, document sources (embedded corpus, local files, TFDS), grain pipelines."""

from __future__ import annotations

import itertools
import os
import shutil

from flaxlm.data import sources
from flaxlm.data.tokenizer import Tokenizer, cached_vocab

WORKDIR_VOCAB = "vocab.txt"
TOKENIZER_FILES = (WORKDIR_VOCAB, "tokenizer.json")  # A WordPiece vocab, or any Hugging Face tokenizer.


def tokenizer_file(directory: str) -> str:
  """The vocab.txt or tokenizer.json a workdir or model directory holds ("" when it holds neither)."""
  for name in TOKENIZER_FILES:
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  return ""


def build_tokenizer(config, workdir: str | None = None) -> Tokenizer:
  """The run's tokenizer: the workdir's vocab.txt when resuming, else init_from's, the configured
  vocab_file, or one trained (and cached) on the task's texts.

  The vocab is copied into the workdir so a run (and prediction from it) never depends on a cache.
  """
  from flaxlm.tasks import TASKS  # Late: tasks import this package.

  tok = config.tokenizer
  saved = tokenizer_file(workdir) if workdir else ""
  if saved:
    vocab_file = saved
  elif config.init_from:
    vocab_file = tokenizer_file(config.init_from)
    if not vocab_file:
      raise FileNotFoundError(f"config.init_from: {config.init_from} holds no vocab.txt or tokenizer.json (a flaxlm "
                              "workdir or converted model holds config.json, its tokenizer and checkpoints/)")
  elif tok.vocab_file:
    vocab_file = tok.vocab_file
  else:
    task = TASKS[config.task.name]
    texts = lambda: itertools.islice(task.vocab_texts(config), tok.train_max_documents)
    vocab_file = cached_vocab(texts, task.vocab_corpus_id(config), tok.vocab_size, tok.lowercase,
                              sources.cache_dir(), kind=tok.kind, num_sentinels=tok.num_sentinels)
  if workdir and not saved:
    os.makedirs(workdir, exist_ok=True)
    name = "tokenizer.json" if vocab_file.endswith(".json") else WORKDIR_VOCAB
    shutil.copyfile(vocab_file, os.path.join(workdir, name))
  return Tokenizer(vocab_file, lowercase=tok.lowercase)
