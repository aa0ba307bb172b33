"""Fine-tune on any GLUE task: `task=cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli`.

BERT's fine-tuning recipe (Devlin et al. 2019, section 4.1): AdamW, lr 5e-5 (the paper searched
2e-5..5e-5), batch 32 examples, 10% warmup then linear decay, dropout 0.1, about 3 epochs; the metric
per task as GLUE reports it (Matthews correlation for CoLA, F1 and accuracy for MRPC and QQP,
Pearson/Spearman for STS-B, matched and mismatched accuracy for MNLI, accuracy otherwise).
Examples are packed several to a 128-token row, so `train.batch_size` counts rows.

Data: GLUE TSV files in `data_dir` (train.tsv, dev.tsv; MNLI dev_matched.tsv and
dev_mismatched.tsv), or without `data_dir` the TFDS `glue/TASK` dataset (downloads once).
Start from a pretrained model with --config.init_from (a flaxlm workdir or `flaxlm.convert` output):

  python -m flaxlm.main --config experiments/glue_finetune.py:task=mrpc,data_dir=/data/glue/MRPC \\
      --config.init_from=/models/bert_base --workdir runs/mrpc
  python -m flaxlm.main --config experiments/glue_finetune.py:task=mnli --config.init_from=/models/bert_base \\
      --workdir runs/mnli
  python -m flaxlm.main --config experiments/glue_finetune.py:smoke --workdir /tmp/glue_smoke  # SST-2, tiny model
"""

import os

from flaxlm import config as config_lib
from flaxlm import recipes
from flaxlm.data.glue import GLUE_TASKS


def get_config(arg=None):
  """GLUE fine-tuning; args: task=NAME (default sst2), data_dir=DIR, smoke."""
  args = config_lib.parse_config_args(arg)
  c = recipes.finetuning("classification", args, {"task"}, "experiments/glue_finetune.py")
  task = args.get("task", "sst2")
  if task not in GLUE_TASKS:
    raise config_lib.ConfigError(f"experiments/glue_finetune.py: task {task!r} is not one of {sorted(GLUE_TASKS)}")
  c.task.glue_task = task
  data_dir = recipes.data_dir(args, task)
  if data_dir:
    c.data.train_file = os.path.join(data_dir, "train.tsv")
    if task == "mnli":
      c.data.eval_file = os.path.join(data_dir, "dev_matched.tsv")
      c.data.extra_eval_files = ("mismatched=" + os.path.join(data_dir, "dev_mismatched.tsv"),)
    else:
      c.data.eval_file = os.path.join(data_dir, "dev.tsv")
  else:
    c.data.tfds_name = f"glue/{task}"
  return c
