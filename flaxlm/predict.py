"""Predict with a trained run: `python -m flaxlm.predict --workdir W --text "..." [--text ...] [--file F]`.

Loads the run's config.json, vocab and newest checkpoint, and prints the task's predictions; for
a masked-LM run, the top candidates for each [MASK] with their probabilities.
"""

from __future__ import annotations

import sys

from absl import app, flags
from absl import logging as absl_logging

from flaxlm.train.trained import load_trained

_WORKDIR = flags.DEFINE_string("workdir", None, "A flaxlm run directory (holds config.json and checkpoints).")
_TEXT = flags.DEFINE_multi_string("text", [], "Input text; repeat the flag for several.")
_FILE = flags.DEFINE_string("file", None, "A file with one input per line.")
_PAIR = flags.DEFINE_multi_string("text_pair", [], "Second text of a sentence pair, one per --text.")
_CONTEXT = flags.DEFINE_multi_string("context", [], "QA: the context of each --text question.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Candidates to show per prediction.")
flags.mark_flag_as_required("workdir")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.ERROR)
  texts = list(_TEXT.value)
  if _FILE.value:
    with open(_FILE.value, encoding="utf-8") as f:
      texts.extend(line.rstrip("\n") for line in f if line.strip())
  if not texts:
    raise app.UsageError("give --text (repeatable) or --file")
  try:
    _, task, params = load_trained(_WORKDIR.value)
    pairs = list(_CONTEXT.value or _PAIR.value) or None
    if pairs is not None and len(pairs) != len(texts):
      raise ValueError(f"{len(pairs)} --context/--text_pair value(s) for {len(texts)} text(s)")
    for line in task.predict(params, texts, pairs=pairs, top_k=_TOP_K.value):
      print(line)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"flaxlm.predict: {e}")


if __name__ == "__main__":
  app.run(main)
