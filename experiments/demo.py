"""Demo: pretrain a small BERT with masked-LM on the embedded Python-docs corpus (no download).

The corpus is pydoc's topic texts and the standard library's docstrings, extracted from the Python
that runs flaxlm, so it exists on every machine. Trains a 4-layer, 128-wide BERT with a trained
8k WordPiece vocab for 1300 steps (about 5.5 minutes on 2 CPU cores), then prints fill-in-the-blank
predictions. On this budget more steps beat a wider model: 256 wide gets fewer steps and a lower
accuracy in the same time, and learning rates above 1e-3 stall at predicting the commonest token.

  python -m flaxlm.main --config experiments/demo.py --workdir runs/demo
  python -m flaxlm.main --config experiments/demo.py:smoke --workdir /tmp/demo_smoke   # ~1 minute
"""

from flaxlm import config as config_lib


def get_config(arg=None):
  """Demo config; `smoke` shrinks it to a one-minute CPU run."""
  args = config_lib.parse_config_args(arg)
  config_lib.check_config_args(args, {"smoke"}, "experiments/demo.py")
  c = config_lib.base_config()
  c.data.source = "python_docs"
  c.data.max_seq_len = 128
  c.data.eval_fraction = 0.05
  c.tokenizer.vocab_size = 8192
  c.model.hidden_size = 128
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.mlp_dim = 512
  c.model.max_position_embeddings = 128
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.decay = "linear"
  c.train.batch_size = 32
  c.train.num_steps = 1300
  c.train.log_every = 20
  c.train.eval_every = 325
  c.train.checkpoint_every = 325
  c.task.fill_mask_examples = (
      "Return the [MASK] of the function.",
      "The [MASK] of the function is returned.",
      "Raise a [MASK] if the file does not exist.",
      "This module provides [MASK] for working with dates and times.",
  )
  if "smoke" in args:
    c.model.hidden_size = 64
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.mlp_dim = 256
    c.tokenizer.vocab_size = 2048
    c.train.batch_size = 16
    c.train.num_steps = 30
    c.train.log_every = 5
    c.train.eval_every = 0
    c.train.checkpoint_every = 10
    c.train.eval_max_batches = 4
    c.optimizer.warmup_steps = 5
  return c
