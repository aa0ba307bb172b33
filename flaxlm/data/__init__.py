"""Data: tokenizer, document sources (embedded corpus, local files, TFDS), grain pipelines."""

from __future__ import annotations

import itertools
import os
import shutil

from flaxlm.data import sources
from flaxlm.data.tokenizer import Tokenizer, cached_vocab

WORKDIR_VOCAB = "vocab.txt"


def build_tokenizer(config, workdir: str | None = None) -> Tokenizer:
  """The run's tokenizer: the workdir's vocab.txt when resuming, else the configured or a trained one.

  The vocab is copied into the workdir so a run (and prediction from it) never depends on a cache.
  """
  tok = config.tokenizer
  saved = os.path.join(workdir, WORKDIR_VOCAB) if workdir else ""
  if saved and os.path.isfile(saved):
    vocab_file = saved
  elif tok.vocab_file:
    vocab_file = tok.vocab_file
  else:
    train_docs = sources.text_source(config.data, config.data.train_split)
    texts = lambda: itertools.islice((train_docs[i] for i in range(len(train_docs))), tok.train_max_documents)
    vocab_file = cached_vocab(texts, f"{train_docs.identity}|{tok.train_max_documents}", tok.vocab_size,
                              tok.lowercase, sources.cache_dir())
  if saved and vocab_file != saved:
    os.makedirs(workdir, exist_ok=True)
    shutil.copyfile(vocab_file, saved)
  return Tokenizer(vocab_file, lowercase=tok.lowercase)
