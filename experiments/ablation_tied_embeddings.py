"""Ablation: masked-LM decoder tied to the input word embeddings, or its own matrix.

BERT ties the output projection of its MLM head to the word embeddings (Press & Wolf 2017, "Using
the Output Embedding to Improve Language Models", found tying helps language models and saves the
V x D parameters); Chung et al. (2021), "Rethinking Embedding Coupling in Pre-trained Language
Models", found that decoupling them improves fine-tuning, given the parameters. The grid:
model.tie_embeddings True or False (a separate `mlm_decoder` kernel, 8192 x 128 = 1.05M more
parameters here, half again the model).

Small scale, and honest about it: the demo's 1.9M-parameter BERT, 1300 steps on the embedded
Python-docs corpus, about 5 minutes a point on 2 CPU cores; at this size the untied run has
far more parameters, which is not the comparison of either paper.

  python -m flaxlm.sweep --config experiments/ablation_tied_embeddings.py --workdir-root runs/ablation_tied
  python -m flaxlm.sweep --config experiments/ablation_tied_embeddings.py:smoke --workdir-root /tmp/tied_smoke
  python -m flaxlm.main --config experiments/ablation_tied_embeddings.py --workdir runs/untied \\
      --config.model.tie_embeddings=False
  python -m flaxlm.main --config experiments/ablation_tied_embeddings.py:smoke --workdir /tmp/untied  # seconds, untied
"""

from flaxlm import config as config_lib
from flaxlm import recipes
from flaxlm import sweep


def get_config(arg=None):
  """The shared small pretraining base (smoke: untied, so the smoke run covers the separate decoder)."""
  args = config_lib.parse_config_args(arg)
  c = recipes.small_pretraining_ablation(args, "experiments/ablation_tied_embeddings.py")
  if "smoke" in args:
    c.model.tie_embeddings = False
  return c


def get_sweep(arg=None):
  """tie_embeddings True / False."""
  del arg
  return sweep.axis("model.tie_embeddings", [True, False])
