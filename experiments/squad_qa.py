"""Fine-tune for extractive QA on SQuAD: `version=1.1` (default) or `version=2.0` (unanswerable questions).

BERT's SQuAD recipe (Devlin et al. 2019, section 4.2): max_seq_len 384, windows every 128 context
tokens, questions cut to 64 tokens, lr 5e-5, batch 32, 2 epochs, n-best 20, answers of at most 30
tokens; v2 answers "" when the null score beats the best span by more than `task.null_threshold`.
BERT-base reaches 88.5 F1 / 80.8 EM on v1.1 dev. Scored by SQuAD's official normalisation.

  python -m flaxlm.main --config experiments/squad_qa.py:version=1.1,data_dir=/data/squad \\
      --config.init_from=/models/bert_base --workdir runs/squad11
  python -m flaxlm.predict --workdir runs/squad11 --text "Who wrote Hamlet?" \\
      --context "Hamlet is a tragedy written by William Shakespeare."
  python -m flaxlm.main --config experiments/squad_qa.py:smoke --workdir /tmp/squad_smoke  # tiny model, ~1 min

`data_dir` holds train-v1.1.json and dev-v1.1.json (or the v2.0 files). The smoke run uses the
small hand-written sample in experiments/data/ for both training and evaluation.
"""

import os

from flaxlm import config as config_lib
from flaxlm import recipes

SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def get_config(arg=None):
  """SQuAD fine-tuning; args: version=1.1|2.0, data_dir=DIR, smoke."""
  args = config_lib.parse_config_args(arg)
  c = recipes.finetuning("qa", args, {"version"}, "experiments/squad_qa.py")
  version = args.get("version", "1.1")
  if version not in ("1.1", "2.0"):
    raise config_lib.ConfigError(f"experiments/squad_qa.py: version must be 1.1 or 2.0, got {version!r}")
  c.task.squad_version = version
  c.data.max_seq_len = 384
  c.model.max_position_embeddings = 512
  c.train.update(batch_size=32, num_steps=5500)  # About 2 epochs of SQuAD v1.1's 88k windows.
  if "data_dir" in args:
    c.data.train_file = os.path.join(args["data_dir"], f"train-v{version}.json")
    c.data.eval_file = os.path.join(args["data_dir"], f"dev-v{version}.json")
  if "smoke" in args:
    sample = os.path.join(SAMPLE_DIR, f"squad_sample_v{version}.json")
    c.data.train_file = c.data.train_file if "data_dir" in args else sample
    c.data.eval_file = c.data.eval_file if "data_dir" in args else sample
    c.data.max_seq_len = 128
    c.task.doc_stride = 32
    c.train.update(batch_size=8, num_steps=200)
  return c
