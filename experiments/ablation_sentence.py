"""Ablation: next-sentence prediction vs sentence-order prediction vs masked-LM alone.

BERT (Devlin et al. 2019) adds next-sentence prediction (NSP: is B the text that follows A, or a
random document's?); RoBERTa (Liu et al. 2019, section 4.2) found that dropping it matches or
improves downstream results; ALBERT (Lan et al. 2020) replaced it with sentence-order
prediction (SOP: are A and B in their original order?), which NSP-trained models solve at chance
while SOP helps. The grid: mlm.sentence_objective none, nsp or sop.

Small scale, and honest about it: the demo's 1.9M-parameter BERT, 1300 steps on the embedded
Python-docs corpus (a "sentence" there is a paragraph line), about 5 minutes a point on 2 CPU
cores. Compare eval/mlm_accuracy (and eval/mlm_loss: eval/loss adds the sentence loss for nsp and
sop); eval/sentence_accuracy shows how well each sentence task is learnt (chance is 0.5). NSP's
random B usually comes from another topic, which is what makes NSP easy and SOP harder.

  python -m flaxlm.sweep --config experiments/ablation_sentence.py --workdir-root runs/ablation_sentence
  python -m flaxlm.sweep --config experiments/ablation_sentence.py:smoke --workdir-root /tmp/sentence_smoke
  python -m flaxlm.main --config experiments/ablation_sentence.py --workdir runs/sop --config.mlm.sentence_objective=sop
  python -m flaxlm.main --config experiments/ablation_sentence.py:smoke --workdir /tmp/sentence  # seconds, with NSP
"""

from flaxlm import config as config_lib
from flaxlm import recipes
from flaxlm import sweep


def get_config(arg=None):
  """The shared small pretraining base (smoke: with NSP, so the smoke run covers the pair pipeline)."""
  args = config_lib.parse_config_args(arg)
  c = recipes.small_pretraining_ablation(args, "experiments/ablation_sentence.py")
  if "smoke" in args:
    c.mlm.sentence_objective = "nsp"
  return c


def get_sweep(arg=None):
  """sentence_objective none / nsp / sop."""
  del arg
  return sweep.axis("mlm.sentence_objective", ["none", "nsp", "sop"])
