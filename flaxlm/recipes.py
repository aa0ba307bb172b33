"""Building blocks that experiment files share: the published BERT and RoBERTa pretraining recipes,
the small-scale base of the ablations, and the fine-tuning defaults. Each experiment in experiments/
calls one of these and states its changes.
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
  """Devlin et al. (2019) pretraining for `size`, masked-LM plus next-sentence prediction; args:
  phase=1|2 (seq 128, then 512), smoke."""
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
  c.mlm.sentence_objective = "nsp"
  c.optimizer.update(name="adamw", learning_rate=1e-4, warmup_steps=10_000, decay="linear",
                     schedule_steps=BERT_TOTAL_STEPS, weight_decay=0.01, eps=1e-6)
  c.train.update(batch_size=256, log_every=100, eval_every=10_000, eval_max_batches=200, checkpoint_every=5_000)
  if phase == "1":
    c.data.max_seq_len, c.mlm.max_predictions_per_seq, c.train.num_steps = 128, 20, BERT_PHASE1_STEPS
  else:
    c.data.max_seq_len, c.mlm.max_predictions_per_seq, c.train.num_steps = 512, 80, BERT_TOTAL_STEPS
    # Phase 2 resumes phase 1's workdir with longer rows: exactly the changes the resume check allows.
    c.train.allow_changed_keys = ("data.max_seq_len", "mlm.max_predictions_per_seq")
  if "smoke" in args:
    _cpu_smoke(c, max_seq_len=64 if phase == "1" else 128, max_predictions=10 if phase == "1" else 20,
               num_steps=30 if phase == "1" else 40, schedule_steps=40)
  return c


def roberta_pretraining(args: dict[str, str], where: str):
  """Liu et al. (2019) RoBERTa-base: masked-LM only, dynamic masking, batch 8k, lr 6e-4; args: smoke."""
  config_lib.check_config_args(args, {"smoke"}, where)
  c = config_lib.base_config()
  c.model.update(**BERT_SIZES["base"], max_position_embeddings=512, type_vocab_size=1, dropout_rate=0.1,
                 attention_dropout_rate=0.1, dtype="bfloat16")
  c.data.update(source="tfds", tfds_name="wikipedia/20230601.en", train_split="train[:99%]",
                eval_split="train[99%:]", max_seq_len=512)
  c.tokenizer.update(vocab_size=50265, lowercase=False)
  # Masks are drawn in every step (flaxlm always masks dynamically); no sentence objective.
  c.mlm.update(mask_rate=0.15, sentence_objective="none")
  c.optimizer.update(name="adamw", learning_rate=6e-4, warmup_steps=24_000, decay="linear", b1=0.9, b2=0.98,
                     eps=1e-6, weight_decay=0.01, grad_clip_norm=0.0)
  c.train.update(batch_size=8192, num_steps=500_000, log_every=100, eval_every=10_000, eval_max_batches=200,
                 checkpoint_every=5_000)
  if "smoke" in args:
    _cpu_smoke(c, max_seq_len=64, max_predictions=10, num_steps=30, schedule_steps=0)
  return c


def _cpu_smoke(c, max_seq_len: int, max_predictions: int, num_steps: int, schedule_steps: int) -> None:
  """Shrinks a pretraining recipe in place to a CPU minute on the embedded corpus, keeping its shape."""
  c.model.update(hidden_size=64, num_layers=2, num_heads=2, mlp_dim=128, dtype="float32")
  c.data.update(source="python_docs", train_split="train", eval_split="validation", max_seq_len=max_seq_len)
  c.mlm.max_predictions_per_seq = max_predictions
  c.tokenizer.vocab_size = 2048
  # The recipes' learning rates barely move a model this small in 40 steps.
  c.optimizer.update(learning_rate=1e-3, warmup_steps=5, schedule_steps=schedule_steps)
  c.train.update(batch_size=16, num_steps=num_steps, log_every=5, eval_every=0, eval_max_batches=4,
                 checkpoint_every=10)


def small_pretraining_ablation(args: dict[str, str], where: str, allowed: frozenset = frozenset()):
  """The base every ablation changes one thing of: the demo's 4-layer, 128-wide BERT (1.9M params),
  masked-LM on the embedded Python-docs corpus, 1300 steps of 32 x 128 tokens (about 5 minutes on 2
  CPU cores); `smoke` shrinks it to a plumbing check of seconds."""
  config_lib.check_config_args(args, allowed | {"smoke"}, where)
  c = config_lib.base_config()
  c.data.update(source="python_docs", max_seq_len=128, eval_fraction=0.05)
  c.tokenizer.vocab_size = 8192
  c.model.update(hidden_size=128, num_layers=4, num_heads=4, mlp_dim=512, max_position_embeddings=128)
  c.optimizer.update(learning_rate=1e-3, warmup_steps=100, decay="linear")
  c.train.update(batch_size=32, num_steps=1300, log_every=20, eval_every=325, checkpoint_every=325,
                 eval_max_batches=0, progress_bar=True)
  if "smoke" in args:
    c.model.update(hidden_size=64, num_layers=2, num_heads=2, mlp_dim=128)
    c.data.max_seq_len = 64
    c.tokenizer.vocab_size = 2048
    c.optimizer.warmup_steps = 2
    c.train.update(batch_size=16, num_steps=12, log_every=4, eval_every=0, checkpoint_every=0, eval_max_batches=2)
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


# The block designs of the generative families, as model-config changes on the same modules.
FAMILY_MODELS = {
    # GPT-2 (Radford et al., 2019): pre-LN blocks with a final LayerNorm, learned positions, tanh GELU, tied head.
    "gpt2": dict(pre_layer_norm=True, embedding_norm=False, type_vocab_size=0, activation="gelu_tanh",
                 layer_norm_eps=1e-5, tie_embeddings=True),
    # T5 v1.0 (Raffel et al., 2020): pre-LN with RMS norm and no biases, bucketed relative position biases,
    # unscaled attention, ReLU feed-forward, tied head scaled by hidden_size ** -0.5.
    "t5": dict(pre_layer_norm=True, norm_type="rms", use_bias=False, position_embedding="relative",
               embedding_norm=False, type_vocab_size=0, scale_attention=False, activation="relu",
               tie_embeddings=True, scale_tied_logits=True, layer_norm_eps=1e-6),
    # BART (Lewis et al., 2020): post-LN with a LayerNorm on the embeddings, learned positions, GELU, tied head.
    "bart": dict(pre_layer_norm=False, embedding_norm=True, type_vocab_size=0, activation="gelu",
                 layer_norm_eps=1e-5, tie_embeddings=True),
}


def generative_base(family: str, task: str):
  """A base config for a causal-LM (`gpt2`) or encoder-decoder (`t5`, `bart`) run with a trained byte-level
  BPE; the experiment sets the sizes, data and schedule."""
  c = config_lib.base_config()
  c.task.name = task
  c.model.update(**FAMILY_MODELS[family])
  c.tokenizer.update(kind="bytelevel_bpe", lowercase=False)
  c.optimizer.update(name="adamw", b2=0.98, eps=1e-9, weight_decay=0.01, decay="cosine")
  return c
