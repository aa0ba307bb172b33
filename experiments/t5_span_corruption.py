"""T5 pretraining with span corruption (Raffel et al., 2020): T5-base's shape and objective.

15% of the tokens are dropped in spans of mean length 3; each span becomes one sentinel <extra_id_i> in
the encoder input, and the decoder writes the spans back after their sentinels. T5-base: 12 + 12 layers,
768 wide, 12 heads, ReLU feed-forward 3072, RMS norm, no biases, bucketed relative position biases (32
buckets, distance 128), tied embeddings, inputs of 512 tokens and targets of 114 (what span corruption of
568 tokens gives), batch 128, 2^19 steps on C4. Deviations, stated: AdamW with warmup and cosine decay
instead of Adafactor with an inverse-square-root schedule, and a byte-level BPE with 100 sentinels trained
on the corpus instead of the SentencePiece vocabulary.

  python -m flaxlm.main --config experiments/t5_span_corruption.py --workdir runs/t5_base
  python -m flaxlm.generate --workdir runs/t5_base --source "The <extra_id_0> walks in <extra_id_1> park."
  python -m flaxlm.main --config experiments/t5_span_corruption.py:smoke --workdir /tmp/t5_smoke  # ~1 min
"""

from flaxlm import config as config_lib
from flaxlm import recipes


def get_config(arg=None):
  """T5-base span corruption on C4 (TFDS c4/en); `smoke` for a CPU minute on the embedded corpus."""
  args = config_lib.parse_config_args(arg)
  config_lib.check_config_args(args, {"smoke"}, "experiments/t5_span_corruption.py")
  c = recipes.generative_base("t5", "seq2seq")
  c.model.update(hidden_size=768, num_layers=12, num_decoder_layers=12, num_heads=12, mlp_dim=3072,
                 dropout_rate=0.0, attention_dropout_rate=0.0, dtype="bfloat16", max_position_embeddings=512)
  c.seq2seq.update(objective="span_corruption", noise_density=0.15, mean_span_length=3.0, max_target_len=114)
  c.data.update(source="tfds", tfds_name="c4/en:3.0.1", train_split="train", eval_split="validation",
                max_seq_len=512)
  c.tokenizer.update(vocab_size=32_100, num_sentinels=100)
  c.optimizer.update(learning_rate=1e-3, warmup_steps=10_000, weight_decay=0.0)
  c.train.update(batch_size=128, num_steps=2**19, log_every=100, eval_every=10_000, eval_max_batches=100,
                 checkpoint_every=5_000)
  if "smoke" in args:
    c.model.update(hidden_size=64, num_layers=2, num_decoder_layers=2, num_heads=2, mlp_dim=128, dtype="float32",
                   max_position_embeddings=128)
    c.data.update(source="python_docs", train_split="train", eval_split="validation", max_seq_len=64)
    c.seq2seq.max_target_len = 24
    c.tokenizer.update(vocab_size=1024, num_sentinels=20)
    c.generate.max_new_tokens = 16
    c.optimizer.update(learning_rate=2e-3, warmup_steps=5)
    c.train.update(batch_size=16, num_steps=30, log_every=10, eval_every=0, eval_max_batches=2, checkpoint_every=15)
  return c
