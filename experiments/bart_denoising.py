"""BART pretraining with text infilling and sentence permutation (Lewis et al., 2020): BART-base's shape.

30% of the tokens are masked in spans whose lengths follow Poisson(3); each span becomes one <mask> (a
zero-length span inserts one), and the lines of each document are shuffled; the decoder reconstructs the
original text. BART-base: 6 + 6 layers, 768 wide, 12 heads, GELU feed-forward 3072, post-LN with a
LayerNorm on the embeddings, learned positions, tied embeddings. Deviations, stated: a byte-level BPE trained
on the corpus instead of GPT-2's, English Wikipedia instead of the paper's 160 GB mix, and a batch of 256 x
512 tokens for 500k steps.

  python -m flaxlm.main --config experiments/bart_denoising.py --workdir runs/bart_base
  python -m flaxlm.generate --workdir runs/bart_base --source "The cat <mask> on the mat."
  python -m flaxlm.main --config experiments/bart_denoising.py:smoke --workdir /tmp/bart_smoke  # ~1 min
"""

from flaxlm import config as config_lib
from flaxlm import recipes


def get_config(arg=None):
  """BART-base denoising on Wikipedia (TFDS); `smoke` for a CPU minute on the embedded corpus."""
  args = config_lib.parse_config_args(arg)
  config_lib.check_config_args(args, {"smoke"}, "experiments/bart_denoising.py")
  c = recipes.generative_base("bart", "seq2seq")
  c.model.update(hidden_size=768, num_layers=6, num_decoder_layers=6, num_heads=12, mlp_dim=3072,
                 max_position_embeddings=512, dropout_rate=0.1, attention_dropout_rate=0.0, dtype="bfloat16")
  c.seq2seq.update(objective="text_infilling", mask_ratio=0.3, poisson_lambda=3.0, permute_sentences=True,
                   max_target_len=512)
  c.data.update(source="tfds", tfds_name="wikipedia/20230601.en", train_split="train[:99%]",
                eval_split="train[99%:]", max_seq_len=512)
  c.tokenizer.vocab_size = 50_265
  c.optimizer.update(learning_rate=4e-4, warmup_steps=10_000)
  c.train.update(batch_size=256, num_steps=500_000, log_every=100, eval_every=10_000, eval_max_batches=100,
                 checkpoint_every=5_000)
  if "smoke" in args:
    c.model.update(hidden_size=64, num_layers=2, num_decoder_layers=2, num_heads=2, mlp_dim=128, dtype="float32",
                   max_position_embeddings=64)
    c.data.update(source="python_docs", train_split="train", eval_split="validation", max_seq_len=64)
    c.seq2seq.max_target_len = 64
    c.tokenizer.vocab_size = 1024
    c.generate.max_new_tokens = 16
    c.optimizer.update(learning_rate=2e-3, warmup_steps=5)
    c.train.update(batch_size=16, num_steps=30, log_every=10, eval_every=0, eval_max_batches=2, checkpoint_every=15)
  return c
