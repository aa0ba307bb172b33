"""Ablation: whole-word masking on or off.

Devlin et al. released whole-word-masking BERT models in 2019 (the BERT repository's README): when
one piece of a word is chosen, all its WordPiece pieces are masked, so the model cannot fill a
piece in from the rest of its word; they report better SQuAD and MNLI scores. The grid:
mlm.whole_word False or True.

Small scale, and honest about it: the demo's 1.9M-parameter BERT with an 8k vocab, 1300 steps on
the embedded Python-docs corpus, about 5 minutes a point on 2 CPU cores. Whole-word masking makes
the MLM task harder, so a lower eval/mlm_accuracy is expected and says nothing about downstream use.

  python -m flaxlm.sweep --config experiments/ablation_whole_word.py --workdir-root runs/ablation_whole_word
  python -m flaxlm.sweep --config experiments/ablation_whole_word.py:smoke --workdir-root /tmp/wwm_smoke
  python -m flaxlm.main --config experiments/ablation_whole_word.py --workdir runs/wwm --config.mlm.whole_word=True
  python -m flaxlm.main --config experiments/ablation_whole_word.py:smoke --workdir /tmp/wwm  # seconds
"""

from flaxlm import config as config_lib
from flaxlm import recipes
from flaxlm import sweep


def get_config(arg=None):
  """The shared small pretraining base; `smoke` for seconds."""
  return recipes.small_pretraining_ablation(config_lib.parse_config_args(arg), "experiments/ablation_whole_word.py")


def get_sweep(arg=None):
  """whole_word off / on."""
  del arg
  return sweep.axis("mlm.whole_word", [False, True])
