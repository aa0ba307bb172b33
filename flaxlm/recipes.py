"""Building blocks that experiment files share: the published BERT pretraining recipe and the
fine-tuning defaults. Each experiment in experiments/ calls one of these and states its changes.
"""

from __future__ import annotations

import os

from flaxlm import config as config_lib

BERT_SIZES = {"base": dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
              "large": dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096)}
BERT_TOTAL_STEPS = 1_000_000
BERT_PHASE1_STEPS = 900_000

# Where developer machines and CI keep the shared data sets; smoke runs fall back to them.
SHARED_DATA = os.environ.get("FLAXLM_SHARED_DATA") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def bert_pretraining(size: str, args: dict[str, str], where: str):
  """Devlin et al. (2019) pretraining for `size`; args: phase=1|2 (seq 128, then 512), smoke."""
  config_lib.check_config_args(args, {"phase", "smoke"}, where)
  phase = args.get("phase", "1")
  if phase not in ("1", "2"):
    raise config_lib.ConfigError(f"{where}: phase must be 1 or 2, got {phase!r}")
  c = config_lib.base_config()
  c.model.update(**BERT_SIZES[size], max_position_embeddings=512, dropout_rate=0.1, attention_dropout_rate=0.1,
                 dtype="bfloat16")
  c.data.update(source="tfds", tfds_name="wikipedia/20230601.en", train_split="train[:99%]",
                eval_split="train[99%:]")
  c.tokenizer.update(vocab_size=30522, lowercase=True)
  c.optimizer.update(name="adamw", learning_rate=1e-4, warmup_steps=10_000, decay="linear",
                     schedule_steps=BERT_TOTAL_STEPS, weight_decay=0.01, eps=1e-6)
  c.train.update(batch_size=256, log_every=100, eval_every=10_000, eval_max_batches=200, checkpoint_every=5_000)
  if phase == "1":
    c.data.max_seq_len, c.mlm.max_predictions_per_seq, c.train.num_steps = 128, 20, BERT_PHASE1_STEPS
  else:
    c.data.max_seq_len, c.mlm.max_predictions_per_seq, c.train.num_steps = 512, 80, BERT_TOTAL_STEPS
  if "smoke" in args:
    # Same recipe shape on the embedded corpus, shrunk to a CPU minute.
    c.model.update(hidden_size=64, num_layers=2, num_heads=2, mlp_dim=128, dtype="float32")
    c.data.update(source="python_docs", train_split="train", eval_split="validation",
                  max_seq_len=64 if phase == "1" else 128)
    c.mlm.max_predictions_per_seq = 10 if phase == "1" else 20
    c.tokenizer.vocab_size = 2048
    # The recipe's 1e-4 barely moves a model this small in 40 steps.
    c.optimizer.update(learning_rate=1e-3, warmup_steps=5, schedule_steps=40)
    c.train.update(batch_size=16, num_steps=30 if phase == "1" else 40, log_every=5, eval_every=0,
                   eval_max_batches=4, checkpoint_every=10)
  return c


def finetuning(task: str, args: dict[str, str], allowed: set[str], where: str):
  """Fine-tuning defaults (BERT's: AdamW, 10% warmup, linear decay, dropout 0.1) for `task`.

  `smoke` shrinks the run to a CPU minute: a tiny model trained from scratch with its own vocab.
  """
  config_lib.check_config_args(args, allowed | {"smoke", "data_dir"}, where)
  c = config_lib.base_config()
  c.task.name = task
  c.model.update(dropout_rate=0.1, attention_dropout_rate=0.1)
  c.optimizer.update(name="adamw", learning_rate=5e-5, warmup_steps=300, decay="linear", weight_decay=0.01,
                     eps=1e-6)
  c.train.update(batch_size=8, eval_batch_size=32, num_steps=3000, log_every=50, eval_every=1000,
                 checkpoint_every=1000, keep_checkpoints=2)
  c.data.packing_bins = 32
  if "smoke" in args:
    c.model.update(hidden_size=64, num_layers=2, num_heads=2, mlp_dim=128, max_position_embeddings=128)
    c.tokenizer.update(vocab_size=2048, lowercase=False)
    c.optimizer.update(learning_rate=2e-3, warmup_steps=10)
    c.train.update(batch_size=8, num_steps=200, log_every=20, eval_every=0, checkpoint_every=100, eval_max_batches=0)
  return c


def data_dir(args: dict[str, str], shared_name: str) -> str:
  """The `data_dir=` argument; for smoke runs without it, the shared data folder of that name."""
  if "data_dir" in args:
    return args["data_dir"]
  if "smoke" in args:
    return os.path.join(SHARED_DATA, shared_name)
  return ""
