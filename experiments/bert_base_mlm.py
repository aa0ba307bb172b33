"""BERT-base masked-LM pretraining, the published recipe (Devlin et al. 2019, "BERT", section A.2).

12 layers, hidden 768, 12 heads, feed-forward 3072, uncased WordPiece vocab of 30,522, post-LN,
GELU, dropout 0.1; Adam (b1 0.9, b2 0.999, weight decay 0.01), lr 1e-4 with 10k warmup steps and
linear decay over 1M steps at batch 256; 15% masking, 80/10/10; sequence length 128 for the first
90% of steps (20 predictions a row), then 512 for the last 10% (80 predictions). The paper also
trains next-sentence prediction, which this config leaves out (RoBERTa showed it is not needed);
the original data was BooksCorpus + English Wikipedia, here TFDS `wikipedia/20230601.en`.

Phase 1 (seq 128, steps 0-900k), then phase 2 (seq 512, steps 900k-1M) in the same workdir:

  python -m flaxlm.main --config experiments/bert_base_mlm.py:phase=1 --workdir gs://BUCKET/bert_base \\
      --config.tokenizer.vocab_file=/path/to/uncased_L-12_H-768_A-12/vocab.txt
  python -m flaxlm.main --config experiments/bert_base_mlm.py:phase=2 --workdir gs://BUCKET/bert_base \\
      --config.tokenizer.vocab_file=/path/to/uncased_L-12_H-768_A-12/vocab.txt

Without a vocab_file, a 30,522-token WordPiece vocab is trained on the first 200k documents.
The data needs TFDS_DATA_DIR holding `wikipedia/20230601.en` in array_record format.

  python -m flaxlm.main --config experiments/bert_base_mlm.py:smoke --workdir /tmp/bert_base_smoke  # CPU, ~1 min
"""

from flaxlm import config as config_lib

SIZES = {"base": dict(hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
         "large": dict(hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096)}
TOTAL_STEPS = 1_000_000
PHASE1_STEPS = 900_000


def bert_recipe(size: str, arg, where: str):
  """The published BERT pretraining recipe for `size`; `arg` picks phase=1|2 or smoke."""
  args = config_lib.parse_config_args(arg)
  config_lib.check_config_args(args, {"phase", "smoke"}, where)
  phase = args.get("phase", "1")
  if phase not in ("1", "2"):
    raise config_lib.ConfigError(f"{where}: phase must be 1 or 2, got {phase!r}")
  c = config_lib.base_config()
  for key, value in SIZES[size].items():
    c.model[key] = value
  c.model.max_position_embeddings = 512
  c.model.dropout_rate = 0.1
  c.model.attention_dropout_rate = 0.1
  c.data.source = "tfds"
  c.data.tfds_name = "wikipedia/20230601.en"
  c.data.train_split = "train[:99%]"
  c.data.eval_split = "train[99%:]"
  c.tokenizer.vocab_size = 30522
  c.tokenizer.lowercase = True
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 10_000
  c.optimizer.decay = "linear"
  c.optimizer.schedule_steps = TOTAL_STEPS
  c.optimizer.weight_decay = 0.01
  c.optimizer.eps = 1e-6
  c.train.batch_size = 256
  c.train.log_every = 100
  c.train.eval_every = 10_000
  c.train.eval_max_batches = 200
  c.train.checkpoint_every = 5_000
  c.model.dtype = "bfloat16"
  if phase == "1":
    c.data.max_seq_len = 128
    c.mlm.max_predictions_per_seq = 20
    c.train.num_steps = PHASE1_STEPS
  else:
    c.data.max_seq_len = 512
    c.mlm.max_predictions_per_seq = 80
    c.train.num_steps = TOTAL_STEPS
  if "smoke" in args:
    # Same recipe shape on the embedded corpus, shrunk to a CPU minute.
    c.model.update(hidden_size=64, num_layers=2, num_heads=2, mlp_dim=128, dtype="float32")
    c.data.source = "python_docs"
    c.data.train_split, c.data.eval_split = "train", "validation"
    c.data.max_seq_len = 64 if phase == "1" else 128
    c.mlm.max_predictions_per_seq = 10 if phase == "1" else 20
    c.tokenizer.vocab_size = 2048
    c.optimizer.learning_rate = 1e-3  # The recipe's 1e-4 barely moves a model this small in 40 steps.
    c.optimizer.warmup_steps = 5
    c.optimizer.schedule_steps = 40
    c.train.update(batch_size=16, num_steps=30 if phase == "1" else 40, log_every=5, eval_every=0,
                   eval_max_batches=4, checkpoint_every=10)
  return c


def get_config(arg=None):
  """BERT-base pretraining; `phase=1|2` (default 1), `smoke` for a CPU minute."""
  return bert_recipe("base", arg, "experiments/bert_base_mlm.py")
