"""Ablation: post-LN vs pre-LN Transformer blocks, with and without learning-rate warmup.

Xiong et al. (2020), "On Layer Normalization in the Transformer Architecture": with LayerNorm after
each residual (post-LN, BERT's choice) the gradients near the output are large at initialisation,
so training needs a warmup and fails without one at a high learning rate; with LayerNorm inside
the residual branch (pre-LN) it trains without warmup. The grid: post-LN or pre-LN x 0 or 100
warmup steps, at lr 1e-3 (the highest at which the post-LN demo model trains on this corpus).

Small scale, and honest about it: the demo's 4-layer, 128-wide BERT (1.9M parameters, far shallower
than the paper's 12 layers, where the effect is strongest), 1300 steps of 32 x 128 tokens of the
embedded Python-docs corpus, about 5 minutes a point on 2 CPU cores. The README shows the table.

  python -m flaxlm.sweep --config experiments/ablation_ln.py --workdir-root runs/ablation_ln --parallel 2
  python -m flaxlm.sweep --config experiments/ablation_ln.py:smoke --workdir-root /tmp/ablation_ln_smoke
  python -m flaxlm.main --config experiments/ablation_ln.py --workdir runs/pre_ln_no_warmup \\
      --config.model.pre_layer_norm=True --config.optimizer.warmup_steps=0      # one point
  python -m flaxlm.main --config experiments/ablation_ln.py:smoke --workdir /tmp/ln_smoke  # seconds
"""

from flaxlm import config as config_lib
from flaxlm import recipes
from flaxlm import sweep


def get_config(arg=None):
  """The shared small pretraining base at lr 1e-3; `smoke` for seconds."""
  return recipes.small_pretraining_ablation(config_lib.parse_config_args(arg), "experiments/ablation_ln.py")


def get_sweep(arg=None):
  """post-LN / pre-LN x warmup 0 / 100 steps (smoke: 0 / 4 of its 12 steps)."""
  warmup = 4 if "smoke" in config_lib.parse_config_args(arg) else 100
  return sweep.product(sweep.axis("model.pre_layer_norm", [False, True]),
                       sweep.axis("optimizer.warmup_steps", [0, warmup]))
