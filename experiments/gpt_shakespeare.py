"""Causal (GPT-2 style) language model on Tiny Shakespeare: validation perplexity and samples.

Tiny Shakespeare (Karpathy's char-rnn corpus, 1.1 MB of the plays): each speech, a block separated by blank
lines, is a document; 5% of them (by content hash) are held out for validation. The model is GPT-2's block
design (pre-LN, learned positions, tanh GELU, tied output layer) at 4 layers x 256 wide over a 4k byte-level
BPE trained on the corpus, so line breaks survive into the samples. Evaluation reports the held-out
perplexity per BPE token; after training it samples continuations (top-p 0.9, temperature 0.8).

  python -m flaxlm.main --config experiments/gpt_shakespeare.py --workdir runs/shakespeare
  python -m flaxlm.generate --workdir runs/shakespeare --prompt "ROMEO:" --method sample --top_p 0.9
  python -m flaxlm.main --config experiments/gpt_shakespeare.py:smoke --workdir /tmp/shakespeare_smoke  # ~1 min
Data: file=PATH (default ../shared/data/corpus/tinyshakespeare.txt).
"""

import os

from flaxlm import config as config_lib
from flaxlm import recipes

_WHERE = "experiments/gpt_shakespeare.py"


def get_config(arg=None):
  """Causal LM on Tiny Shakespeare; args: file=PATH, smoke."""
  args = config_lib.parse_config_args(arg)
  config_lib.check_config_args(args, {"file", "smoke"}, _WHERE)
  c = recipes.generative_base("gpt2", "causal_lm")
  c.data.update(source="text_files",
                files=(args.get("file") or os.path.join(recipes.SHARED_DATA, "corpus", "tinyshakespeare.txt"),),
                eval_fraction=0.05, max_seq_len=128)
  c.model.update(hidden_size=256, num_layers=4, num_heads=4, mlp_dim=1024, max_position_embeddings=256,
                 dropout_rate=0.1, attention_dropout_rate=0.0)
  c.tokenizer.vocab_size = 4096
  c.optimizer.update(learning_rate=1e-3, warmup_steps=100)
  c.train.update(batch_size=32, num_steps=1500, log_every=50, eval_every=500, checkpoint_every=500,
                 eval_batch_size=32)
  c.generate.update(prompts=("ROMEO:", "First Citizen:\nWe are"), method="sample", temperature=0.8, top_p=0.9,
                    max_new_tokens=80)
  if "smoke" in args:
    c.model.update(hidden_size=64, num_layers=2, num_heads=2, mlp_dim=128)
    c.data.max_seq_len = 64
    c.tokenizer.vocab_size = 1024
    c.generate.max_new_tokens = 16
    c.optimizer.warmup_steps = 5
    c.train.update(batch_size=16, num_steps=40, log_every=10, eval_every=0, checkpoint_every=20,
                   eval_max_batches=4)
  return c
