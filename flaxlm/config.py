"""Config helpers: the base config every experiment starts from, `file.py:args` parsing, validation.

Every key a run can use exists in `base_config()`, and the returned ConfigDict is locked, so a
typo in an experiment file or on the command line (`--config.train.batchsize=8`) fails at
start-up with the key's name instead of being silently added.
"""

from __future__ import annotations

import copy
import json
import os

import ml_collections
from ml_collections import config_dict


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key."""


def parse_config_args(arg: str | None) -> dict[str, str]:
  """Parses the `smoke,task=sst2` part of `experiments/NAME.py:smoke,task=sst2` into a dict.

  A bare word becomes a flag set to 'true'.
  """
  out: dict[str, str] = {}
  if not arg:
    return out
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, value = item.partition("=")
    out[key.strip()] = value.strip() if sep else "true"
  return out


def check_config_args(args: dict[str, str], allowed: set[str], where: str) -> None:
  """Fails naming the unknown argument when an experiment is given one it does not take."""
  unknown = sorted(set(args) - allowed)
  if unknown:
    raise ConfigError(
        f"{where}: unknown config argument(s) {unknown}; this experiment accepts {sorted(allowed)}")


def base_config() -> ml_collections.ConfigDict:
  """Every key a run understands, with defaults for a small CPU-sized BERT."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # A flaxlm workdir or converted model (config.json, vocab.txt, checkpoints/) whose encoder (and
  # pooler) initialise this run; heads it lacks start fresh. Its architecture and vocab are used.
  c.init_from = ""
  # jit: one program over the (data, fsdp, tensor) mesh. pmap: pure data parallelism with jax.pmap,
  # parameters replicated on every device and gradients summed with lax.psum.
  c.parallelism = "jit"

  c.task = ml_collections.ConfigDict()
  c.task.name = "mlm"
  # Sentences with [MASK] whose top-5 fillers are printed after training (MLM only).
  c.task.fill_mask_examples = ()
  # Label names of a classification or NER task, in id order; empty: read from the data.
  c.task.labels = ()
  c.task.glue_task = "sst2"  # classification: which GLUE task (text fields, labels, metrics).
  c.task.squad_version = "1.1"  # qa: 1.1, or 2.0 with unanswerable questions.
  c.task.doc_stride = 128  # qa: tokens between the starts of a long context's windows.
  c.task.max_query_length = 64  # qa: question tokens kept.
  c.task.max_answer_length = 30  # qa: longest answer span considered, in tokens.
  c.task.n_best = 20  # qa: start and end candidates per window.
  c.task.null_threshold = 0.0  # qa v2: answer "" when null score - best span score > this.

  c.model = ml_collections.ConfigDict()
  c.model.vocab_size = config_dict.placeholder(int)  # None: taken from the tokenizer.
  c.model.hidden_size = 256
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.mlp_dim = 1024
  c.model.max_position_embeddings = 512
  c.model.type_vocab_size = 2  # 0: no token-type embedding.
  c.model.dropout_rate = 0.1
  c.model.attention_dropout_rate = 0.1
  c.model.layer_norm_eps = 1e-12
  c.model.initializer_range = 0.02
  c.model.pre_layer_norm = False  # False: post-LN as in BERT; True: pre-LN with a final LayerNorm.
  c.model.dtype = "float32"  # Compute dtype: float32 or bfloat16. Parameters stay float32.
  # Output layer (MLM decoder, LM head) tied to the word embeddings; False: its own mlm_decoder / lm_head kernel.
  c.model.tie_embeddings = True
  c.model.attention_impl = "einsum"  # einsum (with attention dropout), or xla / cudnn: jax.nn.dot_product_attention.
  c.model.remat = "none"  # Recompute encoder blocks in the backward pass: none, block, or dots (keep matmuls).
  # Generative variants (defaults are BERT's): GPT-2, T5 and BART differ from it only in these.
  c.model.embedding_norm = True  # Norm after the embedding sum (BERT, BART); False for GPT-2 and T5.
  c.model.norm_type = "layer"  # layer (LayerNorm) or rms (T5: no mean subtraction, no bias).
  c.model.use_bias = True  # Biases in attention and feed-forward projections (T5: False).
  c.model.position_embedding = "learned"  # learned, relative (T5's bucketed attention bias) or none.
  c.model.relative_buckets = 32  # relative: number of distance buckets ...
  c.model.relative_max_distance = 128  # ... and the distance from which all share the last bucket.
  c.model.activation = "gelu"  # Feed-forward: gelu (exact erf), gelu_tanh (GPT-2's gelu_new) or relu.
  c.model.gated_mlp = False  # T5 v1.1: act(x W_0) * (x W_1), then W_o.
  c.model.scale_attention = True  # Scores divided by sqrt(head dim); T5: False.
  c.model.embedding_scale = False  # Word embeddings times sqrt(hidden_size) (BART's scale_embedding).
  c.model.num_decoder_layers = 0  # Encoder-decoder models; 0: num_layers.
  c.model.scale_tied_logits = False  # T5: decoder output times hidden_size**-0.5 before the tied output layer.
  c.model.output_bias = False  # LM heads: a bias on the logits (BART's final_logits_bias).
  c.model.attention_head_dim = 0  # Head dim; 0: hidden_size // num_heads (T5's d_kv may differ).

  c.data = ml_collections.ConfigDict()
  # python_docs: the embedded corpus (pydoc topics + stdlib docstrings, ships with Python).
  # text_files: local files matched by data.files (documents separated by blank lines).
  # tfds: any TFDS dataset with a text feature, data.tfds_name (e.g. wikipedia/20230601.en).
  c.data.source = "python_docs"
  c.data.files = ()
  c.data.tfds_name = ""
  c.data.text_key = "text"
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.tfds_data_dir = ""  # Empty: $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  c.data.eval_fraction = 0.02  # Share of local documents held out for the validation split.
  c.data.max_seq_len = 128
  c.data.packing_bins = 64  # First-fit packing window, in rows.
  # Fine-tuning data: local files (GLUE TSV, CoNLL, SQuAD JSON), or data.tfds_name (e.g. glue/sst2).
  c.data.train_file = ""
  c.data.eval_file = ""
  c.data.extra_eval_files = ()  # More eval sets as "name=path" (MNLI: "mismatched=dev_mismatched.tsv").
  # Independent input streams; each process reads shards / process_count of them, and the global
  # batch is their rows in shard order. 0: one per process. Fix it to read identical batches on
  # any number of hosts.
  c.data.shards = 0
  c.data.pack_examples = True  # Fine-tuning: pack short examples into shared rows instead of padding each.

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.vocab_file = ""  # An existing BERT vocab.txt or tokenizer.json; empty: train one (tokenizer.kind).
  # What to train: wordpiece (BERT's vocab.txt) or bytelevel_bpe (GPT-2/RoBERTa style tokenizer.json: every
  # text round-trips exactly, which generation and BLEU need).
  c.tokenizer.kind = "wordpiece"
  c.tokenizer.vocab_size = 8192  # Size of a trained vocab.
  c.tokenizer.lowercase = True  # WordPiece only; a byte-level BPE keeps the text as it is.
  c.tokenizer.num_sentinels = 0  # Byte-level BPE: T5 span-corruption sentinels <extra_id_0>, ... to add.
  c.tokenizer.train_max_documents = 200_000

  c.mlm = ml_collections.ConfigDict()
  c.mlm.mask_rate = 0.15
  c.mlm.mask_token_prob = 0.8  # Of the chosen tokens: replaced by [MASK] ...
  c.mlm.random_token_prob = 0.1  # ... by a random non-special token; the rest stay unchanged.
  c.mlm.whole_word = False
  c.mlm.max_predictions_per_seq = config_dict.placeholder(int)  # None: ceil(mask_rate * max_seq_len).
  # none, nsp (BERT's next-sentence prediction) or sop (ALBERT's sentence-order prediction): rows
  # then hold [CLS] A [SEP] B [SEP] pairs and a pooled 2-way head adds its loss to the MLM loss.
  c.mlm.sentence_objective = "none"

  # Encoder-decoder objectives (task.name = seq2seq).
  c.seq2seq = ml_collections.ConfigDict()
  # translation (pairs from data.train_file / eval_file), span_corruption (T5) or text_infilling (BART) on
  # the documents of data.source.
  c.seq2seq.objective = "translation"
  c.seq2seq.source_lang = "de"  # translation: reads PREFIX.de and PREFIX.en for data.train_file=PREFIX.
  c.seq2seq.target_lang = "en"
  c.seq2seq.max_target_len = 64  # Decoder tokens per row (the encoder takes data.max_seq_len).
  # The token the decoder starts from; empty: bos (<s>). Imported models keep theirs (T5 <pad>, BART </s>).
  c.seq2seq.decoder_start_token = ""
  c.seq2seq.label_smoothing = 0.0
  c.seq2seq.noise_density = 0.15  # span_corruption: share of tokens in noise spans ...
  c.seq2seq.mean_span_length = 3.0  # ... and their mean length.
  c.seq2seq.mask_ratio = 0.3  # text_infilling: share of tokens masked, in spans of Poisson(lambda) length.
  c.seq2seq.poisson_lambda = 3.0
  c.seq2seq.permute_sentences = False  # text_infilling: shuffle a document's lines first (BART).
  c.seq2seq.eval_bleu = True  # translation: decode the eval set and report sacreBLEU (eval/bleu).
  c.seq2seq.eval_max_examples = 0  # Examples decoded for BLEU; 0: all.

  # Decoding, for generation after training, `flaxlm.generate` defaults and BLEU evaluation.
  c.generate = ml_collections.ConfigDict()
  c.generate.prompts = ()  # Causal LM: texts continued after training (seq2seq: sources translated).
  c.generate.method = "greedy"  # greedy, sample or beam.
  c.generate.max_new_tokens = 64
  c.generate.temperature = 1.0  # sample: logits / temperature, then top-k, then top-p (nucleus).
  c.generate.top_k = 0  # 0: off.
  c.generate.top_p = 1.0  # 1.0: off.
  c.generate.num_beams = 4  # beam.
  c.generate.length_penalty = 1.0  # beam: log-probability / generated length ** length_penalty.

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adamw"  # adamw or lamb.
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 0
  c.optimizer.decay = "linear"  # linear, cosine or constant, after warmup, to end_lr_fraction * lr.
  c.optimizer.end_lr_fraction = 0.0
  # Length of the warmup+decay schedule; 0: train.num_steps. Lets a run stop part-way along one
  # schedule and a later config continue it (BERT's phase 1 at seq 128, then phase 2 at 512).
  c.optimizer.schedule_steps = 0
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-6
  c.optimizer.weight_decay = 0.01
  c.optimizer.grad_clip_norm = 1.0  # 0 disables clipping.

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 32  # Global batch, in rows, over all devices and hosts.
  # When positive, the global batch is this many rows per data-parallel device (batch_size is then
  # ignored), so the same config keeps each chip's load as a pod slice grows.
  c.train.per_device_batch_size = 0
  c.train.grad_accum_steps = 1
  c.train.num_steps = 1000
  c.train.log_every = 20
  c.train.eval_every = 500  # 0: only at the end.
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3
  c.train.eval_batch_size = 64
  c.train.eval_max_batches = 0  # 0: the whole eval split.
  c.train.peak_flops = 0.0  # Per device, for perf/mfu; 0: known accelerator peak, or measured on CPU.
  c.train.progress_bar = True
  # A step whose loss or gradients are not finite is never applied. "halt" then stops the
  # run (saving the batch for inspection); "skip" counts it (train/skipped_updates) and goes on.
  c.train.nonfinite = "halt"
  # The newest checkpoint fails to load: "fallback" moves it to WORKDIR/damaged_checkpoints/ and
  # resumes from the previous one; "fail" stops with an error. Never silently starts from scratch.
  c.train.on_damaged_checkpoint = "fallback"
  # Resuming refuses a config whose model, masking, data, tokenizer, seed or batch size differ from
  # the checkpoint's; list keys here (e.g. "('data.max_seq_len',)") to allow those changes.
  c.train.allow_changed_keys = ()

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all devices left after the other axes.
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  # Logical axis name -> mesh axes. Parameters and activations carry the logical names.
  c.mesh.rules = (
      ("batch", ("data", "fsdp")),
      ("length", None),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("kv", None),
      ("vocab", "tensor"),
  )
  c.lock()
  return c


# Architecture keys a fine-tuning run takes from its init_from model (its own values are ignored).
ARCHITECTURE_KEYS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "mlp_dim", "max_position_embeddings",
                     "type_vocab_size", "layer_norm_eps", "pre_layer_norm", "tie_embeddings", "embedding_norm",
                     "norm_type", "use_bias", "position_embedding", "relative_buckets", "relative_max_distance",
                     "activation", "gated_mlp", "scale_attention", "embedding_scale", "num_decoder_layers",
                     "scale_tied_logits", "output_bias", "attention_head_dim")

_DTYPES = ("float32", "bfloat16")
_SOURCES = ("python_docs", "text_files", "tfds")


def _need(ok: bool, key: str, message: str) -> None:
  if not ok:
    raise ConfigError(f"config.{key}: {message}")


def validate(c: ml_collections.ConfigDict) -> None:
  """Fails at start-up, naming the key, on values that cannot work together."""
  m, d, t, o, mlm = c.model, c.data, c.train, c.optimizer, c.mlm
  from flaxlm import tasks  # Late import: tasks import models, which read configs.
  from flaxlm.data.pipeline import SENTENCE_OBJECTIVES
  from flaxlm.data.tokenizer import TOKENIZER_KINDS
  from flaxlm.models.layers import ACTIVATIONS, ATTENTION_IMPLS, NORM_TYPES, POSITION_EMBEDDINGS, REMAT_POLICIES
  _need(c.task.name in tasks.TASKS, "task.name", f"{c.task.name!r} is not one of {sorted(tasks.TASKS)}")
  tasks.TASKS[c.task.name].validate_config(c, _need)
  for key in ("hidden_size", "num_layers", "num_heads", "mlp_dim", "max_position_embeddings"):
    _need(m[key] > 0, f"model.{key}", f"must be positive, got {m[key]}")
  _need(m.attention_head_dim > 0 or m.hidden_size % m.num_heads == 0, "model.num_heads",
        f"hidden_size {m.hidden_size} is not divisible by num_heads {m.num_heads} (or set model.attention_head_dim)")
  for key in ("type_vocab_size", "num_decoder_layers", "attention_head_dim"):
    _need(m[key] >= 0, f"model.{key}", f"must be >= 0, got {m[key]}")
  for key, allowed in (("norm_type", NORM_TYPES), ("position_embedding", POSITION_EMBEDDINGS),
                       ("activation", ACTIVATIONS)):
    _need(m[key] in allowed, f"model.{key}", f"{m[key]!r} is not one of {allowed}")
  if m.position_embedding == "relative":
    _need(m.relative_buckets >= 4 and m.relative_buckets % 2 == 0, "model.relative_buckets",
          f"must be an even number >= 4 (half per direction in an encoder), got {m.relative_buckets}")
    _need(m.relative_max_distance > m.relative_buckets // 2, "model.relative_max_distance",
          f"must exceed relative_buckets // 2 = {m.relative_buckets // 2}, got {m.relative_max_distance}")
  _need(m.tie_embeddings or not m.scale_tied_logits, "model.scale_tied_logits",
        "scales the tied output layer's input; it needs model.tie_embeddings=True")
  _need(m.dtype in _DTYPES, "model.dtype", f"{m.dtype!r} is not one of {_DTYPES}")
  _need(m.attention_impl in ATTENTION_IMPLS, "model.attention_impl",
        f"{m.attention_impl!r} is not one of {ATTENTION_IMPLS}")
  _need(m.attention_impl == "einsum" or m.attention_dropout_rate == 0.0, "model.attention_dropout_rate",
        f"must be 0 with model.attention_impl={m.attention_impl!r} (jax.nn.dot_product_attention has no dropout), "
        f"got {m.attention_dropout_rate}")
  _need(m.remat in REMAT_POLICIES, "model.remat", f"{m.remat!r} is not one of {tuple(REMAT_POLICIES)}")
  _need(0.0 <= m.dropout_rate < 1.0, "model.dropout_rate", f"must be in [0, 1), got {m.dropout_rate}")
  _need(0.0 <= m.attention_dropout_rate < 1.0, "model.attention_dropout_rate",
        f"must be in [0, 1), got {m.attention_dropout_rate}")
  _need(d.source in _SOURCES, "data.source", f"{d.source!r} is not one of {_SOURCES}")
  if d.source == "text_files":
    _need(len(d.files) > 0, "data.files", "data.source='text_files' needs at least one file or glob")
  if d.source == "tfds":
    _need(bool(d.tfds_name), "data.tfds_name", "data.source='tfds' needs a dataset name")
  _need(0.0 < d.eval_fraction < 1.0, "data.eval_fraction", f"must be in (0, 1), got {d.eval_fraction}")
  _need(d.max_seq_len >= 8, "data.max_seq_len", f"must be at least 8, got {d.max_seq_len}")
  _need(d.max_seq_len <= m.max_position_embeddings, "data.max_seq_len",
        f"{d.max_seq_len} exceeds model.max_position_embeddings {m.max_position_embeddings}")
  _need(d.packing_bins >= 1, "data.packing_bins", f"must be positive, got {d.packing_bins}")
  if c.tokenizer.vocab_file:
    _need(os.path.isfile(c.tokenizer.vocab_file), "tokenizer.vocab_file",
          f"no such file: {c.tokenizer.vocab_file}")
  else:
    _need(c.tokenizer.vocab_size >= 128, "tokenizer.vocab_size",
          f"must be at least 128, got {c.tokenizer.vocab_size}")
    _need(c.tokenizer.kind in TOKENIZER_KINDS, "tokenizer.kind",
          f"{c.tokenizer.kind!r} is not one of {TOKENIZER_KINDS}")
    _need(c.tokenizer.num_sentinels == 0 or c.tokenizer.kind == "bytelevel_bpe", "tokenizer.num_sentinels",
          f"sentinels are added to a trained bytelevel_bpe vocab, not to {c.tokenizer.kind!r}")
  _need(0.0 < mlm.mask_rate < 1.0, "mlm.mask_rate", f"must be in (0, 1), got {mlm.mask_rate}")
  _need(mlm.mask_token_prob >= 0 and mlm.random_token_prob >= 0
        and mlm.mask_token_prob + mlm.random_token_prob <= 1.0 + 1e-9,
        "mlm.random_token_prob",
        f"mask_token_prob {mlm.mask_token_prob} + random_token_prob {mlm.random_token_prob} must lie in [0, 1]")
  _need(mlm.sentence_objective in SENTENCE_OBJECTIVES, "mlm.sentence_objective",
        f"{mlm.sentence_objective!r} is not one of {SENTENCE_OBJECTIVES}")
  if mlm.sentence_objective != "none":
    _need(m.type_vocab_size >= 2, "mlm.sentence_objective",
          f"{mlm.sentence_objective} marks B with token type 1, but model.type_vocab_size is {m.type_vocab_size}")
  if mlm.max_predictions_per_seq is not None:
    _need(0 < mlm.max_predictions_per_seq <= d.max_seq_len, "mlm.max_predictions_per_seq",
          f"must be in [1, max_seq_len={d.max_seq_len}], got {mlm.max_predictions_per_seq}")
  g = c.generate
  _need(g.method in ("greedy", "sample", "beam"), "generate.method", f"{g.method!r} is not greedy, sample or beam")
  _need(g.max_new_tokens > 0, "generate.max_new_tokens", f"must be positive, got {g.max_new_tokens}")
  _need(g.temperature > 0, "generate.temperature", f"must be positive, got {g.temperature}")
  _need(g.top_k >= 0, "generate.top_k", f"must be >= 0, got {g.top_k}")
  _need(0.0 < g.top_p <= 1.0, "generate.top_p", f"must be in (0, 1], got {g.top_p}")
  _need(g.num_beams >= 1, "generate.num_beams", f"must be at least 1, got {g.num_beams}")
  _need(o.name in ("adamw", "lamb"), "optimizer.name", f"{o.name!r} is not adamw or lamb")
  _need(o.decay in ("linear", "cosine", "constant"), "optimizer.decay",
        f"{o.decay!r} is not linear, cosine or constant")
  _need(o.learning_rate > 0, "optimizer.learning_rate", f"must be positive, got {o.learning_rate}")
  _need(o.warmup_steps >= 0, "optimizer.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
  _need(o.schedule_steps >= 0, "optimizer.schedule_steps", f"must be >= 0, got {o.schedule_steps}")
  _need(t.num_steps > 0, "train.num_steps", f"must be positive, got {t.num_steps}")
  _need(t.batch_size > 0, "train.batch_size", f"must be positive, got {t.batch_size}")
  _need(t.grad_accum_steps > 0 and t.batch_size % t.grad_accum_steps == 0, "train.grad_accum_steps",
        f"batch_size {t.batch_size} is not divisible by grad_accum_steps {t.grad_accum_steps}")
  for key in ("log_every", "eval_every", "checkpoint_every", "eval_max_batches"):
    _need(t[key] >= 0, f"train.{key}", f"must be >= 0, got {t[key]}")
  _need(t.log_every > 0, "train.log_every", "must be positive")
  _need(t.keep_checkpoints >= 1, "train.keep_checkpoints", f"must be at least 1, got {t.keep_checkpoints}")
  _need(t.eval_batch_size > 0, "train.eval_batch_size", f"must be positive, got {t.eval_batch_size}")
  _need(c.parallelism in ("jit", "pmap"), "parallelism", f"{c.parallelism!r} is not jit or pmap")
  _need(c.data.shards >= 0, "data.shards", f"must be >= 0, got {c.data.shards}")
  _need(t.per_device_batch_size >= 0, "train.per_device_batch_size", f"must be >= 0, got {t.per_device_batch_size}")
  _need(t.nonfinite in ("halt", "skip"), "train.nonfinite", f"{t.nonfinite!r} is not halt or skip")
  _need(t.on_damaged_checkpoint in ("fallback", "fail"), "train.on_damaged_checkpoint",
        f"{t.on_damaged_checkpoint!r} is not fallback or fail")
  axes = {"data": c.mesh.data, "fsdp": c.mesh.fsdp, "tensor": c.mesh.tensor}
  _need(sum(v == -1 for v in axes.values()) <= 1, "mesh", f"at most one axis may be -1, got {axes}")
  for name, size in axes.items():
    _need(size == -1 or size >= 1, f"mesh.{name}", f"must be -1 or positive, got {size}")
  _need(m.num_heads % max(c.mesh.tensor, 1) == 0, "mesh.tensor",
        f"num_heads {m.num_heads} is not divisible by mesh.tensor {c.mesh.tensor}")


def with_pretrained_model(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `c` whose architecture, tokenizer casing and (unless set) decoder start token come from
  init_from's config.json."""
  if not c.init_from:
    return c
  path = os.path.join(c.init_from, "config.json")
  if not os.path.isfile(path):
    raise ConfigError(f"config.init_from: {path} not found (a flaxlm workdir or converted model holds "
                      "config.json, vocab.txt and checkpoints/)")
  with open(path, encoding="utf-8") as f:
    source = from_json(f.read())
  out = copy.deepcopy(c)
  for key in ARCHITECTURE_KEYS:
    with out.ignore_type():  # vocab_size is a typed placeholder that may be None on either side.
      out.model[key] = source.model[key]
  out.tokenizer.lowercase = source.tokenizer.lowercase
  if not out.seq2seq.decoder_start_token:  # Keep the token the pretrained decoder starts from (BART </s>, T5 <pad>).
    out.seq2seq.decoder_start_token = source.seq2seq.decoder_start_token
  return out


# Keys that define what a checkpoint is a checkpoint of: resuming with other values is refused
# (unless train.allow_changed_keys lists them). A key ending in "." covers its whole section.
RESUME_IDENTITY_KEYS = ("seed", "model.", "mlm.", "seq2seq.", "tokenizer.", "task.", "train.batch_size",
                        "train.per_device_batch_size", "optimizer.name", "data.shards",
                        "data.source", "data.files", "data.tfds_name", "data.train_split", "data.train_file",
                        "data.max_seq_len", "data.pack_examples", "data.packing_bins")
# Within those sections, keys that change no shape and no data: free to change on resume.
RESUME_FREE_KEYS = ("model.dtype", "model.dropout_rate", "model.attention_dropout_rate", "task.fill_mask_examples",
                    "seq2seq.eval_bleu", "seq2seq.eval_max_examples")


def _flat(values: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in values.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = tuple(value) if isinstance(value, list) else value
  return out


def resume_differences(saved: ml_collections.ConfigDict, new: ml_collections.ConfigDict) -> list[str]:
  """`key: saved -> new` for each identity key whose value differs and is not allowed to."""
  old_values, new_values = _flat(json.loads(to_json(saved))), _flat(json.loads(to_json(new)))
  allowed = set(new.train.allow_changed_keys) | set(RESUME_FREE_KEYS)
  out = []
  for key in sorted(set(old_values) | set(new_values)):
    identity = any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUME_IDENTITY_KEYS)
    if identity and key not in allowed and old_values.get(key) != new_values.get(key):
      out.append(f"{key}: {old_values.get(key)!r} -> {new_values.get(key)!r}")
  return out


def to_json(c: ml_collections.ConfigDict) -> str:
  """The config as indented JSON, as saved to `config.json` in the workdir."""
  return json.dumps(c.to_dict(), indent=2, sort_keys=True, default=list)


def from_json(text: str) -> ml_collections.ConfigDict:
  """Rebuilds a run's config from its `config.json`, over the base config so defaults fill gaps."""
  c = base_config()
  c.unlock()
  _merge(c, json.loads(text), prefix="")
  c.lock()
  return c


def _merge(c: ml_collections.ConfigDict, values: dict, prefix: str) -> None:
  for key, value in values.items():
    if isinstance(value, dict) and key in c and isinstance(c[key], ml_collections.ConfigDict):
      _merge(c[key], value, prefix + key + ".")
    elif key == "rules":
      c[key] = tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in value)
    elif isinstance(value, list):
      c[key] = tuple(value)
    else:
      with c.ignore_type():
        c[key] = value
