"""Ablation: BERT's 80/10/10 replacement vs always [MASK].

Devlin et al. (2019), "BERT", section C.2 (table 8): of the chosen tokens BERT puts [MASK] in 80%,
a random token in 10% and leaves 10% unchanged, so the model also learns representations of real
tokens it never sees as [MASK] at fine-tuning; always [MASK] matched it on MNLI but did worse on
NER, most of all with the features used without fine-tuning. The grid zips mlm.mask_token_prob and
mlm.random_token_prob: (0.8, 0.1) and (1.0, 0.0).

Small scale, and honest about it: the demo's 1.9M-parameter BERT, 1300 steps on the embedded
Python-docs corpus, about 5 minutes a point on 2 CPU cores. The eval corrupts like the training,
so always-[MASK] sees no misleading random tokens there; the paper's comparison is downstream.

  python -m flaxlm.sweep --config experiments/ablation_mask_replacement.py --workdir-root runs/ablation_replacement
  python -m flaxlm.sweep --config experiments/ablation_mask_replacement.py:smoke --workdir-root /tmp/replacement_smoke
  python -m flaxlm.main --config experiments/ablation_mask_replacement.py --workdir runs/always_mask \\
      --config.mlm.mask_token_prob=1.0 --config.mlm.random_token_prob=0.0
  python -m flaxlm.main --config experiments/ablation_mask_replacement.py:smoke --workdir /tmp/replacement  # seconds
"""

from flaxlm import config as config_lib
from flaxlm import recipes
from flaxlm import sweep


def get_config(arg=None):
  """The shared small pretraining base; `smoke` for seconds."""
  return recipes.small_pretraining_ablation(config_lib.parse_config_args(arg),
                                            "experiments/ablation_mask_replacement.py")


def get_sweep(arg=None):
  """(mask, random) = (0.8, 0.1), as BERT, and (1.0, 0.0), always [MASK]."""
  del arg
  return sweep.zipped(sweep.axis("mlm.mask_token_prob", [0.8, 1.0]), sweep.axis("mlm.random_token_prob", [0.1, 0.0]))
