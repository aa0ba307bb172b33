"""Ablation: masking 15% vs 40% of the tokens.

Wettig et al. (2022), "Should You Mask 15% in Masked Language Modeling?": BERT's 15% is not
special; 40% gives better downstream results for BERT-large. The grid:
mlm.mask_rate 0.15 or 0.40 (the head's slots per row follow: ceil(rate x 128)).

Small scale, and honest about it: the demo's 1.9M-parameter BERT, 1300 steps on the embedded
Python-docs corpus, about 5 minutes a point on 2 CPU cores. The eval masks at each run's own rate,
so eval/mlm_accuracy at 40% answers a harder question than at 15%; the paper compares fine-tuned
downstream accuracy instead (fine-tune each point with --config.init_from=runs/ablation_mask_rate/POINT).

  python -m flaxlm.sweep --config experiments/ablation_mask_rate.py --workdir-root runs/ablation_mask_rate
  python -m flaxlm.sweep --config experiments/ablation_mask_rate.py:smoke --workdir-root /tmp/mask_rate_smoke
  python -m flaxlm.main --config experiments/ablation_mask_rate.py --workdir runs/mask40 --config.mlm.mask_rate=0.4
  python -m flaxlm.main --config experiments/ablation_mask_rate.py:smoke --workdir /tmp/mask_rate  # seconds
"""

from flaxlm import config as config_lib
from flaxlm import recipes
from flaxlm import sweep


def get_config(arg=None):
  """The shared small pretraining base; `smoke` for seconds."""
  return recipes.small_pretraining_ablation(config_lib.parse_config_args(arg), "experiments/ablation_mask_rate.py")


def get_sweep(arg=None):
  """mask_rate 0.15 / 0.40."""
  del arg
  return sweep.axis("mlm.mask_rate", [0.15, 0.4])
