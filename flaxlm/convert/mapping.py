"""The pure correspondence between flaxlm parameter trees and Hugging Face state dicts.

One `Rule` per tensor pairs a flaxlm path (`encoder/layer_0/attention/query/kernel`) with a
Hugging Face name (`bert.encoder.layer.0.attention.self.query.weight`), the Hugging Face shape the
config implies, and the two exact (transpose/reshape/slice) layouts between them. The rules are
generated from the model config, the model family (BERT or RoBERTa) and the head, so import and
export are the same table read in opposite directions and round trips are bit-identical.

Heads and the flaxlm trees they map to (issue 3's task models use the same names):

| head             | Hugging Face class suffix    | flaxlm tree                                    |
|------------------|------------------------------|------------------------------------------------|
| `base`           | `Model`                      | `encoder`, `pooler` (when the checkpoint has one) |
| `mlm`            | `ForMaskedLM`                | `encoder`, `mlm_transform`, `mlm_bias`         |
| `pretraining`    | `ForPreTraining` (BERT)      | the `mlm` trees, `pooler`, `seq_relationship` (next-sentence head) |
| `classification` | `ForSequenceClassification`  | `encoder`, `pooler`, `classifier`              |
| `ner`            | `ForTokenClassification`     | `encoder`, `classifier`                        |
| `qa`             | `ForQuestionAnswering`       | `encoder`, `qa_outputs`                        |

The generative families convert one class each, Hugging Face to flaxlm only (import-only):

| head        | Hugging Face class             | flaxlm model: tree                                            |
|-------------|--------------------------------|---------------------------------------------------------------|
| `causal_lm` | `GPT2LMHeadModel`              | CausalLM: `decoder` (+ `lm_head` when untied)                 |
| `seq2seq`   | `T5ForConditionalGeneration`   | EncoderDecoderLM: `encoder`, `decoder` (+ `lm_head` untied)   |
| `seq2seq`   | `BartForConditionalGeneration` | EncoderDecoderLM: `encoder`, `decoder`, `output_bias` (+ `lm_head` untied) |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from flaxlm.models import ModelConfig


class ConversionError(ValueError):
  """A checkpoint or model that cannot be converted; the message names the tensor or config key."""


@dataclasses.dataclass(frozen=True)
class Family:
  """Where a BERT-family model's tensors live in its Hugging Face checkpoints."""

  model_type: str  # config.json's model_type.
  class_prefix: str  # "Bert" in BertForMaskedLM.
  base_prefix: str  # The encoder's name inside a model with a head ("bert." in bert.embeddings...).
  mlm_head: str = ""  # The masked-LM head's name.
  mlm_transform_dense: str = ""  # Its dense layer's name inside the head.
  mlm_transform_norm: str = ""  # Its LayerNorm's name inside the head.
  mlm_decoder: str = ""  # The tied decoder (never stored by flaxlm; checked on import).
  pooled_classifier: bool = False  # True: sequence classification keeps its pooler inside `classifier` (RoBERTa).
  has_nsp_head: bool = False  # BertForPreTraining's next-sentence head exists in this family.
  buffers: tuple[str, ...] = ()  # Name suffixes of non-parameter tensors its checkpoints may hold.


BERT = Family(model_type="bert", class_prefix="Bert", base_prefix="bert.", mlm_head="cls.predictions.",
              mlm_transform_dense="transform.dense", mlm_transform_norm="transform.LayerNorm",
              mlm_decoder="cls.predictions.decoder.", pooled_classifier=False, has_nsp_head=True)
# RoBERTa shares BERT's encoder; it differs in names, its classification head, and position ids
# that start after the padding id (handled by `position_offset`, not by the flaxlm model).
ROBERTA = Family(model_type="roberta", class_prefix="Roberta", base_prefix="roberta.", mlm_head="lm_head.",
                 mlm_transform_dense="dense", mlm_transform_norm="layer_norm", mlm_decoder="lm_head.decoder.",
                 pooled_classifier=True, has_nsp_head=False)
FAMILIES = {f.model_type: f for f in (BERT, ROBERTA)}  # The families flaxlm also exports to.
# Generative families (import only). GPT-2's attention blocks may carry their causal-mask buffers.
GPT2 = Family(model_type="gpt2", class_prefix="GPT2", base_prefix="transformer.",
              buffers=(".attn.bias", ".attn.masked_bias"))
BART = Family(model_type="bart", class_prefix="Bart", base_prefix="model.")
T5 = Family(model_type="t5", class_prefix="T5", base_prefix="")
GENERATIVE_ARCHITECTURES = {"GPT2LMHeadModel": (GPT2, "causal_lm"), "T5ForConditionalGeneration": (T5, "seq2seq"),
                            "BartForConditionalGeneration": (BART, "seq2seq")}
GENERATIVE_HEADS = ("causal_lm", "seq2seq")

HEAD_CLASS_SUFFIX = {"base": "Model", "mlm": "ForMaskedLM", "pretraining": "ForPreTraining",
                     "classification": "ForSequenceClassification",
                     "ner": "ForTokenClassification", "qa": "ForQuestionAnswering"}
# The flaxlm task each head trains with; a bare encoder is a pretrained (masked-LM) model.
HEAD_TASK = {"base": "mlm", "mlm": "mlm", "pretraining": "mlm", "classification": "classification", "ner": "ner",
             "qa": "qa", "causal_lm": "causal_lm", "seq2seq": "seq2seq"}

ARCHITECTURES: dict[str, tuple[Family, str]] = {
    f.class_prefix + suffix: (f, head) for f in FAMILIES.values() for head, suffix in HEAD_CLASS_SUFFIX.items()
    if head != "pretraining" or f.has_nsp_head}
ARCHITECTURES.update(GENERATIVE_ARCHITECTURES)


def parse_architecture(name: str) -> tuple[Family, str]:
  """(family, head) of a Hugging Face class name such as BertForMaskedLM."""
  if name not in ARCHITECTURES:
    raise ConversionError(f"config.json architectures: {name!r} is not supported; flaxlm converts "
                          f"{', '.join(sorted(ARCHITECTURES))}")
  return ARCHITECTURES[name]


def architecture_name(family: Family, head: str) -> str:
  """The Hugging Face class that loads a `head` model of `family`."""
  for name, (f, h) in GENERATIVE_ARCHITECTURES.items():
    if (f, h) == (family, head):
      return name
  return family.class_prefix + HEAD_CLASS_SUFFIX[head]


@dataclasses.dataclass(frozen=True)
class Rule:
  """One tensor: its flaxlm path, its Hugging Face name and shape, and the layouts between them."""

  path: tuple[str, ...]
  hf_name: str
  hf_shape: tuple[int, ...]
  to_flaxlm: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]


def _same(x):
  return x


def _transpose(x):
  return np.ascontiguousarray(x.T)


def _copy(path: str, hf_name: str, hf_shape: tuple[int, ...]) -> Rule:
  return Rule(tuple(path.split("/")), hf_name, hf_shape, _same, _same)


def _import_only(x):
  raise ConversionError("this tensor is one part of a fused Hugging Face tensor; flaxlm imports it, it does not "
                        "export it")


def _linear(path: str, hf_name: str, d_in: int, d_out: int, bias: bool = True) -> list[Rule]:
  """torch.nn.Linear stores weight [out, in]; flax Dense stores kernel [in, out]."""
  rules = [Rule(tuple(f"{path}/kernel".split("/")), f"{hf_name}.weight", (d_out, d_in), _transpose, _transpose)]
  return rules + [_copy(f"{path}/bias", f"{hf_name}.bias", (d_out,))] if bias else rules


def _conv1d(path: str, hf_name: str, d_in: int, d_out: int) -> list[Rule]:
  """GPT-2's Conv1D stores weight [in, out], as flax Dense does: no transpose."""
  return [_copy(f"{path}/kernel", f"{hf_name}.weight", (d_in, d_out)),
          _copy(f"{path}/bias", f"{hf_name}.bias", (d_out,))]


def _layer_norm(path: str, hf_name: str, dim: int) -> list[Rule]:
  return [_copy(f"{path}/scale", f"{hf_name}.weight", (dim,)), _copy(f"{path}/bias", f"{hf_name}.bias", (dim,))]


def _norm(path: str, hf_name: str, cfg: ModelConfig) -> list[Rule]:
  """LayerNorm, or T5's RMS norm (a scale, no bias)."""
  if cfg.norm_type == "rms":
    return [_copy(f"{path}/scale", f"{hf_name}.weight", (cfg.hidden_size,))]
  return _layer_norm(path, hf_name, cfg.hidden_size)


def _attention_projections(path: str, q: str, k: str, v: str, o: str, cfg: ModelConfig, bias: bool = True
                           ) -> list[Rule]:
  """Q, K, V kernels [D, H, K] and the output kernel [H, K, D] against torch's [out, in] matrices q, k, v, o."""
  d, h, kv = cfg.hidden_size, cfg.num_heads, cfg.head_dim
  p = tuple(path.split("/"))
  rules = []
  for name, hf_name in (("query", q), ("key", k), ("value", v)):
    rules.append(Rule((*p, name, "kernel"), f"{hf_name}.weight", (h * kv, d),
                      lambda w: np.ascontiguousarray(w.T.reshape(d, h, kv)),
                      lambda kernel: np.ascontiguousarray(kernel.reshape(d, h * kv).T)))
    if bias:
      rules.append(Rule((*p, name, "bias"), f"{hf_name}.bias", (h * kv,),
                        lambda b: b.reshape(h, kv), lambda b: b.reshape(h * kv)))
  rules.append(Rule((*p, "out_kernel"), f"{o}.weight", (d, h * kv),
                    lambda w: np.ascontiguousarray(w.T.reshape(h, kv, d)),
                    lambda kernel: np.ascontiguousarray(kernel.reshape(h * kv, d).T)))
  if bias:
    rules.append(_copy(f"{path}/out_bias", f"{o}.bias", (d,)))
  return rules


def _attention(path: str, hf_name: str, cfg: ModelConfig) -> list[Rule]:
  """BERT's self-attention: self.query / self.key / self.value and output.dense."""
  return _attention_projections(path, f"{hf_name}.self.query", f"{hf_name}.self.key", f"{hf_name}.self.value",
                                f"{hf_name}.output.dense", cfg)


def _fused_attention(path: str, hf_name: str, cfg: ModelConfig) -> list[Rule]:
  """GPT-2's attention: c_attn, one Conv1D [D, 3 H K] whose output columns are Q | K | V, and c_proj [H K, D]."""
  d, h, kv = cfg.hidden_size, cfg.num_heads, cfg.head_dim
  p = tuple(path.split("/"))
  rules = []
  for i, name in enumerate(("query", "key", "value")):
    part = slice(i * h * kv, (i + 1) * h * kv)
    rules.append(Rule((*p, name, "kernel"), f"{hf_name}.c_attn.weight", (d, 3 * h * kv),
                      lambda w, part=part: np.ascontiguousarray(w[:, part].reshape(d, h, kv)), _import_only))
    rules.append(Rule((*p, name, "bias"), f"{hf_name}.c_attn.bias", (3 * h * kv,),
                      lambda b, part=part: np.ascontiguousarray(b[part].reshape(h, kv)), _import_only))
  rules.append(Rule((*p, "out_kernel"), f"{hf_name}.c_proj.weight", (h * kv, d),
                    lambda w: np.ascontiguousarray(w.reshape(h, kv, d)),
                    lambda kernel: np.ascontiguousarray(kernel.reshape(h * kv, d))))
  rules.append(_copy(f"{path}/out_bias", f"{hf_name}.c_proj.bias", (d,)))
  return rules


def _positions(hf_name: str, cfg: ModelConfig, offset: int, path: str = "encoder/embeddings/position/embedding"
               ) -> Rule:
  """flaxlm positions start at 0; RoBERTa's and BART's tables have `offset` leading rows (RoBERTa: padding_idx
  + 1; BART: 2) never used by a real token, dropped on import and written as zeros on export."""
  d = cfg.hidden_size
  return Rule(tuple(path.split("/")), hf_name, (cfg.max_position_embeddings + offset, d),
              lambda w: np.ascontiguousarray(w[offset:]),
              lambda table: np.concatenate([np.zeros((offset, d), table.dtype), table]))


def encoder_rules(cfg: ModelConfig, prefix: str, position_offset: int) -> list[Rule]:
  """Embeddings and every layer; `prefix` is the encoder's name in the checkpoint ("bert." or "")."""
  if cfg.pre_layer_norm:
    raise ConversionError("config.model.pre_layer_norm=True: Hugging Face BERT and RoBERTa are post-LN; a "
                          "pre-LN flaxlm model has no equivalent there")
  d, f = cfg.hidden_size, cfg.mlp_dim
  e = f"{prefix}embeddings."
  rules = [_copy("encoder/embeddings/word/embedding", f"{e}word_embeddings.weight", (cfg.vocab_size, d)),
           _positions(f"{e}position_embeddings.weight", cfg, position_offset),
           _copy("encoder/embeddings/token_type/embedding", f"{e}token_type_embeddings.weight",
                 (cfg.type_vocab_size, d)),
           *_layer_norm("encoder/embeddings/norm", f"{e}LayerNorm", d)]
  for i in range(cfg.num_layers):
    ours, theirs = f"encoder/layer_{i}", f"{prefix}encoder.layer.{i}"
    rules += _attention(f"{ours}/attention", f"{theirs}.attention", cfg)
    rules += _layer_norm(f"{ours}/attention_norm", f"{theirs}.attention.output.LayerNorm", d)
    rules += _linear(f"{ours}/mlp/wi", f"{theirs}.intermediate.dense", d, f)
    rules += _linear(f"{ours}/mlp/wo", f"{theirs}.output.dense", f, d)
    rules += _layer_norm(f"{ours}/mlp_norm", f"{theirs}.output.LayerNorm", d)
  return rules


def head_rules(cfg: ModelConfig, family: Family, head: str, num_labels: int, with_pooler: bool) -> list[Rule]:
  """The tensors of `head` outside the encoder; `with_pooler` only matters for the bare `base` model."""
  d = cfg.hidden_size
  prefix = "" if head == "base" else family.base_prefix
  pooler = _linear("pooler/dense", f"{prefix}pooler.dense", d, d)
  if head == "base":
    return pooler if with_pooler else []
  if head in ("mlm", "pretraining"):
    m = family.mlm_head
    mlm = [*_linear("mlm_transform/dense", f"{m}{family.mlm_transform_dense}", d, d),
           *_layer_norm("mlm_transform/norm", f"{m}{family.mlm_transform_norm}", d),
           _copy("mlm_bias", f"{m}bias", (cfg.vocab_size,))]
    if head == "mlm":
      return mlm
    # BERT's next-sentence head: IsNext / NotNext logits from the pooled [CLS] vector.
    return [*mlm, *pooler, *_linear("seq_relationship", "cls.seq_relationship", d, 2)]
  if head == "classification":
    if family.pooled_classifier:
      # RoBERTa's head is out_proj(tanh(dense(x[CLS]))): at inference the same maths as pooler + classifier.
      return [*_linear("pooler/dense", "classifier.dense", d, d),
              *_linear("classifier", "classifier.out_proj", d, num_labels)]
    return [*pooler, *_linear("classifier", "classifier", d, num_labels)]
  if head == "ner":
    return _linear("classifier", "classifier", d, num_labels)
  if head == "qa":
    return _linear("qa_outputs", "qa_outputs", d, 2)  # Start and end logits.
  raise ConversionError(f"unknown head {head!r}; flaxlm has {sorted(HEAD_CLASS_SUFFIX)}")


def all_rules(cfg: ModelConfig, family: Family, head: str, num_labels: int = 0, with_pooler: bool = True,
              position_offset: int = 0) -> list[Rule]:
  """Every tensor of a `head` model, encoder first, named as Hugging Face saves that class."""
  if head in GENERATIVE_HEADS:
    return {"gpt2": gpt2_rules, "bart": bart_rules, "t5": t5_rules}[family.model_type](cfg)
  prefix = "" if head == "base" else family.base_prefix
  return encoder_rules(cfg, prefix, position_offset) + head_rules(cfg, family, head, num_labels, with_pooler)


def _lm_head(cfg: ModelConfig) -> list[Rule]:
  """An untied LM head: torch Linear(D, V, bias=False); a tied one is not a tensor of its own."""
  return [] if cfg.tie_embeddings else _linear("lm_head", "lm_head", cfg.hidden_size, cfg.vocab_size, bias=False)


def gpt2_rules(cfg: ModelConfig) -> list[Rule]:
  """GPT2LMHeadModel: wte, wpe, pre-LN blocks (ln_1, fused attention, ln_2, Conv1D MLP), ln_f."""
  d, f, t = cfg.hidden_size, cfg.mlp_dim, "transformer."
  rules = [_copy("decoder/embeddings/word/embedding", f"{t}wte.weight", (cfg.vocab_size, d)),
           _positions(f"{t}wpe.weight", cfg, 0, path="decoder/embeddings/position/embedding")]
  for i in range(cfg.num_layers):
    ours, theirs = f"decoder/layer_{i}", f"{t}h.{i}"
    rules += _layer_norm(f"{ours}/attention_norm", f"{theirs}.ln_1", d)
    rules += _fused_attention(f"{ours}/attention", f"{theirs}.attn", cfg)
    rules += _layer_norm(f"{ours}/mlp_norm", f"{theirs}.ln_2", d)
    rules += _conv1d(f"{ours}/mlp/wi", f"{theirs}.mlp.c_fc", d, f)
    rules += _conv1d(f"{ours}/mlp/wo", f"{theirs}.mlp.c_proj", f, d)
  return rules + _layer_norm("decoder/final_norm", f"{t}ln_f", d) + _lm_head(cfg)


BART_POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding numbers position 0 as row 2.


def bart_rules(cfg: ModelConfig) -> list[Rule]:
  """BartForConditionalGeneration: shared embeddings, per-stack positions and layernorm_embedding, post-LN
  layers, final_logits_bias."""
  d, f, m = cfg.hidden_size, cfg.mlp_dim, "model."
  rules = [_copy("encoder/embeddings/word/embedding", f"{m}shared.weight", (cfg.vocab_size, d))]
  for stack in ("encoder", "decoder"):
    rules.append(_positions(f"{m}{stack}.embed_positions.weight", cfg, BART_POSITION_OFFSET,
                            path=f"{stack}/embeddings/position/embedding"))
    rules += _layer_norm(f"{stack}/embeddings/norm", f"{m}{stack}.layernorm_embedding", d)

  def attention(ours, theirs):
    return _attention_projections(ours, f"{theirs}.q_proj", f"{theirs}.k_proj", f"{theirs}.v_proj",
                                  f"{theirs}.out_proj", cfg)

  def mlp(ours, theirs):
    return [*_linear(f"{ours}/mlp/wi", f"{theirs}.fc1", d, f), *_linear(f"{ours}/mlp/wo", f"{theirs}.fc2", f, d),
            *_layer_norm(f"{ours}/mlp_norm", f"{theirs}.final_layer_norm", d)]

  for i in range(cfg.num_layers):
    ours, theirs = f"encoder/layer_{i}", f"{m}encoder.layers.{i}"
    rules += attention(f"{ours}/attention", f"{theirs}.self_attn")
    rules += _layer_norm(f"{ours}/attention_norm", f"{theirs}.self_attn_layer_norm", d)
    rules += mlp(ours, theirs)
  for i in range(cfg.decoder_layers):
    ours, theirs = f"decoder/layer_{i}", f"{m}decoder.layers.{i}"
    rules += attention(f"{ours}/self_attention", f"{theirs}.self_attn")
    rules += _layer_norm(f"{ours}/self_attention_norm", f"{theirs}.self_attn_layer_norm", d)
    rules += attention(f"{ours}/cross_attention", f"{theirs}.encoder_attn")
    rules += _layer_norm(f"{ours}/cross_attention_norm", f"{theirs}.encoder_attn_layer_norm", d)
    rules += mlp(ours, theirs)
  rules.append(Rule(("output_bias",), "final_logits_bias", (1, cfg.vocab_size), lambda b: b.reshape(-1),
                    lambda b: b.reshape(1, -1)))
  return rules + _lm_head(cfg)


def t5_rules(cfg: ModelConfig) -> list[Rule]:
  """T5ForConditionalGeneration: shared embeddings, pre-LN RMS-norm blocks without biases, one relative
  attention bias table per stack (HF keeps it in block 0), final_layer_norm per stack."""
  d, f = cfg.hidden_size, cfg.mlp_dim
  rules = [_copy("encoder/embeddings/word/embedding", "shared.weight", (cfg.vocab_size, d))]

  def attention(ours, theirs):
    return _attention_projections(ours, f"{theirs}.q", f"{theirs}.k", f"{theirs}.v", f"{theirs}.o", cfg, bias=False)

  def mlp(ours, theirs):
    inputs = [("wi_0", "wi_0"), ("wi_1", "wi_1")] if cfg.gated_mlp else [("wi", "wi")]
    rules = [r for a, b in inputs for r in _linear(f"{ours}/mlp/{a}", f"{theirs}.DenseReluDense.{b}", d, f, False)]
    return rules + _linear(f"{ours}/mlp/wo", f"{theirs}.DenseReluDense.wo", f, d, bias=False)

  for stack in ("encoder", "decoder"):
    self_attention = "attention" if stack == "encoder" else "self_attention"
    for i in range(cfg.num_layers if stack == "encoder" else cfg.decoder_layers):
      ours, theirs = f"{stack}/layer_{i}", f"{stack}.block.{i}.layer"
      rules += attention(f"{ours}/{self_attention}", f"{theirs}.0.SelfAttention")
      rules += _norm(f"{ours}/{self_attention}_norm", f"{theirs}.0.layer_norm", cfg)
      if stack == "decoder":
        rules += attention(f"{ours}/cross_attention", f"{theirs}.1.EncDecAttention")
        rules += _norm(f"{ours}/cross_attention_norm", f"{theirs}.1.layer_norm", cfg)
      last = 1 if stack == "encoder" else 2
      rules += mlp(ours, f"{theirs}.{last}")
      rules += _norm(f"{ours}/mlp_norm", f"{theirs}.{last}.layer_norm", cfg)
    rules.append(_copy(f"{stack}/relative_bias/embedding",
                       f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                       (cfg.relative_buckets, cfg.num_heads)))
    rules += _norm(f"{stack}/final_norm", f"{stack}.final_layer_norm", cfg)
  return rules + _lm_head(cfg)


def tied_copies(cfg: ModelConfig, family: Family) -> list[tuple[str, tuple[str, ...]]]:
  """(Hugging Face name, flaxlm path) of tensors a generative checkpoint may store as copies of the shared word
  table: the encoder's and decoder's embed_tokens and a tied lm_head."""
  if family is GPT2:
    names, word = [], ("decoder", "embeddings", "word", "embedding")
  else:
    prefix = family.base_prefix
    names, word = [f"{prefix}encoder.embed_tokens.weight", f"{prefix}decoder.embed_tokens.weight"], (
        "encoder", "embeddings", "word", "embedding")
  if cfg.tie_embeddings:
    names.append("lm_head.weight")
  return [(name, word) for name in names]


# Persistent buffers that older transformers versions saved with the weights; they are not parameters.
_BUFFER_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")


def _renamed(name: str) -> str:
  """Names from checkpoints written before transformers called LayerNorm parameters weight/bias."""
  if name.endswith(".gamma"):
    return name[: -len("gamma")] + "weight"
  if name.endswith(".beta"):
    return name[: -len("beta")] + "bias"
  return name


def droppable(family: Family, head: str) -> tuple[str, ...]:
  """Name prefixes of tensors a checkpoint may hold that the flaxlm `head` model deliberately leaves out.

  A masked-LM checkpoint usually carries the pooler and BertForPreTraining's next-sentence head,
  which masked-LM and the token-level heads never use, and a bare encoder leaves out every head;
  Hugging Face drops them the same way when it loads those classes.
  """
  pooler = (f"{family.base_prefix}pooler.", "pooler.")
  nsp = ("cls.seq_relationship.",) if family.has_nsp_head else ()
  return {"base": (family.mlm_head, *nsp), "mlm": (*pooler, *nsp), "ner": pooler, "qa": pooler}.get(head, ())


def hf_to_flaxlm(state: dict[str, np.ndarray], rules: list[Rule], family: Family, head: str,
                 tied: list[tuple[str, tuple[str, ...]]] = ()) -> tuple[dict, list[str]]:
  """(flaxlm param tree, names of dropped tensors) from a Hugging Face state dict.

  Every rule's tensor must be present with the expected shape, and every tensor of the checkpoint
  must be used, be a known buffer, the tied decoder or a `tied` copy (equal to what it is tied to), or a part
  the head drops; otherwise the error names the tensors. Several rules may read parts of one tensor.
  """
  remaining = {_renamed(name): value for name, value in state.items()}
  params: dict = {}
  missing, used = [], set()
  for rule in rules:
    name = _find(remaining, rule.hf_name, family)
    if name is None:
      missing.append(rule.hf_name)
      continue
    value = np.asarray(remaining[name])
    used.add(name)
    if tuple(value.shape) != rule.hf_shape:
      raise ConversionError(_shape_message(name, rule, value.shape))
    _set(params, rule.path, rule.to_flaxlm(value))
  if missing:
    raise ConversionError(f"the checkpoint lacks {len(missing)} tensor(s) that a {architecture_name(family, head)} "
                          f"needs: {_listed(missing)}")
  for name in used:
    del remaining[name]
  if head in ("mlm", "pretraining"):
    _check_tied_decoder(remaining, params, family)
  _check_tied_copies(remaining, params, tied, family)
  dropped = sorted(n for n in remaining if n.startswith(droppable(family, head)))
  buffers = _BUFFER_SUFFIXES + family.buffers
  unexpected = sorted(n for n in remaining if n not in dropped and not n.endswith(buffers))
  if unexpected:
    raise ConversionError(f"the checkpoint has {len(unexpected)} tensor(s) that a {architecture_name(family, head)} "
                          f"does not: {_listed(unexpected)}")
  return params, dropped


def flaxlm_to_hf(params: dict, rules: list[Rule]) -> dict[str, np.ndarray]:
  """The Hugging Face state dict of a flaxlm param tree; every flaxlm parameter must have a rule."""
  state = {}
  used = set()
  for rule in rules:
    try:
      value = _get(params, rule.path)
    except KeyError:
      raise ConversionError(f"the flaxlm checkpoint lacks parameter {'/'.join(rule.path)} "
                            f"(needed for {rule.hf_name})") from None
    out = rule.to_hf(np.asarray(value))
    if tuple(out.shape) != rule.hf_shape:
      raise ConversionError(f"flaxlm parameter {'/'.join(rule.path)} has shape {tuple(np.shape(value))}, which "
                            f"does not give {rule.hf_name} the shape {rule.hf_shape} the model config implies")
    state[rule.hf_name] = out
    used.add(rule.path)
  extra = sorted("/".join(p) for p in _paths(params) if p not in used)
  if extra:
    raise ConversionError(f"flaxlm parameter(s) with no Hugging Face counterpart: {_listed(extra)}")
  return state


def _find(state: dict, name: str, family: Family) -> str | None:
  """The checkpoint's name for `name`: as is, or with/without the encoder prefix.

  A bare BertModel saves `embeddings...`, a model with a head `bert.embeddings...`; Hugging Face
  loads either into either, and so does flaxlm.
  """
  if name in state:
    return name
  if name.startswith(family.base_prefix) and name[len(family.base_prefix):] in state:
    return name[len(family.base_prefix):]
  if family.base_prefix + name in state:
    return family.base_prefix + name
  return None


def _check_tied_decoder(remaining: dict, params: dict, family: Family) -> None:
  """flaxlm's decoder is the word-embedding matrix with the head's bias; a stored copy must agree."""
  word_embeddings = params["encoder"]["embeddings"]["word"]["embedding"]
  for suffix, tied_to in (("weight", word_embeddings), ("bias", params["mlm_bias"])):
    name = f"{family.mlm_decoder}{suffix}"
    if name in remaining:
      value = np.asarray(remaining.pop(name))
      if value.shape != tied_to.shape or not np.array_equal(value, tied_to):
        what = "the word embeddings" if suffix == "weight" else f"{family.mlm_head}bias"
        raise ConversionError(f"{name} differs from {what}: flaxlm ties the masked-LM decoder to them, so an "
                              f"untied checkpoint cannot be converted")


def _check_tied_copies(remaining: dict, params: dict, tied, family: Family) -> None:
  """A stored copy of the shared word table (embed_tokens, a tied lm_head) must equal it: flaxlm keeps one."""
  for hf_name, path in tied:
    name = _find(remaining, hf_name, family)
    if name is not None:
      value, table = np.asarray(remaining.pop(name)), _get(params, path)
      if value.shape != table.shape or not np.array_equal(value, table):
        raise ConversionError(f"{name} differs from the shared word embeddings: flaxlm keeps one table for the "
                              f"encoder, the decoder and a tied output layer (set tie_word_embeddings=false in "
                              f"config.json if the checkpoint's lm_head is its own)")


def _listed(names: list[str], most: int = 10) -> str:
  return ", ".join(names[:most]) + (f" ... ({len(names) - most} more)" if len(names) > most else "")


def _shape_message(name: str, rule: Rule, got) -> str:
  message = f"tensor {name} has shape {tuple(got)}, but config.json implies {rule.hf_shape}"
  if rule.path[-2:] == ("word", "embedding") or rule.path in (("mlm_bias",), ("output_bias",)):
    message += f" (vocab size mismatch: {got[0]} rows against config.json vocab_size={rule.hf_shape[0]})"
  return message


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _paths(tree: dict, prefix: tuple[str, ...] = ()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _paths(value, (*prefix, key))
    else:
      yield (*prefix, key)
