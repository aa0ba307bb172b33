"""The Hugging Face side of a conversion: config.json, weight files and tokenizer files.

Weights are read from `model.safetensors` (or its sharded index) with safetensors' NumPy API, so
importing needs no torch; only a `pytorch_model.bin` checkpoint needs torch to be read.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from flaxlm.convert.mapping import BART, GPT2, ROBERTA, ConversionError, Family
from flaxlm.data.tokenizer import Tokenizer
from flaxlm.models import ModelConfig

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
TORCH_BIN_INDEX = "pytorch_model.bin.index.json"
VOCAB_TXT = "vocab.txt"
TOKENIZER_JSON = "tokenizer.json"

# BertConfig's defaults, for keys a config.json leaves out (transformers writes only some of them).
_HF_DEFAULTS = {"max_position_embeddings": 512, "type_vocab_size": 2, "hidden_dropout_prob": 0.1,
                "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12, "initializer_range": 0.02,
                "hidden_act": "gelu", "position_embedding_type": "absolute"}


def read_json(path: str) -> dict:
  """A JSON file as a dict; the error names the file."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise ConversionError(f"{path} not found") from None
  except json.JSONDecodeError as e:
    raise ConversionError(f"{path} is not valid JSON: {e}") from None


def write_json(path: str, value: dict) -> None:
  """Writes `value` as indented JSON."""
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write("\n")


# ----------------------------------------------------------------------------- config


def _hf_value(hf: dict, key: str):
  if key in hf:
    return hf[key]
  if key in _HF_DEFAULTS:
    return _HF_DEFAULTS[key]
  raise ConversionError(f"config.json lacks {key!r}")


def position_offset(family: Family, pad_token_id: int) -> int:
  """Rows of the position table before position 0: RoBERTa numbers real tokens from padding_idx + 1."""
  return pad_token_id + 1 if family is ROBERTA else 0


def model_config_from_hf(hf: dict, family: Family) -> tuple[ModelConfig, int]:
  """(flaxlm ModelConfig, position offset) from a Hugging Face config.json, refusing what flaxlm cannot run."""
  if hf.get("model_type", family.model_type) != family.model_type:
    raise ConversionError(f"config.json model_type {hf['model_type']!r} does not match its architecture "
                          f"(a {family.model_type} model)")
  if _hf_value(hf, "hidden_act") != "gelu":
    raise ConversionError(f"config.json hidden_act={hf['hidden_act']!r}: flaxlm's feed-forward uses the exact "
                          f"(erf) GELU, Hugging Face's 'gelu'")
  if _hf_value(hf, "position_embedding_type") != "absolute":
    raise ConversionError(f"config.json position_embedding_type={hf['position_embedding_type']!r}: flaxlm has "
                          f"absolute position embeddings only")
  for key in ("is_decoder", "add_cross_attention"):
    if hf.get(key):
      raise ConversionError(f"config.json {key}=true: flaxlm converts bidirectional encoders only")
  hidden, heads = _hf_value(hf, "hidden_size"), _hf_value(hf, "num_attention_heads")
  if hidden % heads:
    raise ConversionError(f"config.json hidden_size {hidden} is not divisible by num_attention_heads {heads}")
  offset = position_offset(family, hf.get("pad_token_id", 1 if family is ROBERTA else 0))
  cfg = ModelConfig(
      vocab_size=_hf_value(hf, "vocab_size"), hidden_size=hidden, num_layers=_hf_value(hf, "num_hidden_layers"),
      num_heads=heads, mlp_dim=_hf_value(hf, "intermediate_size"),
      max_position_embeddings=_hf_value(hf, "max_position_embeddings") - offset,
      type_vocab_size=_hf_value(hf, "type_vocab_size"), dropout_rate=_hf_value(hf, "hidden_dropout_prob"),
      attention_dropout_rate=_hf_value(hf, "attention_probs_dropout_prob"),
      layer_norm_eps=_hf_value(hf, "layer_norm_eps"), initializer_range=_hf_value(hf, "initializer_range"))
  if cfg.max_position_embeddings <= 0:
    raise ConversionError(f"config.json max_position_embeddings {hf['max_position_embeddings']} leaves no "
                          f"positions after RoBERTa's offset of {offset} (pad_token_id + 1)")
  return cfg, offset


# Hugging Face activation names -> flaxlm's `activation`.
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
# Each generative config class's defaults, for keys an older config.json leaves out.
_GENERATIVE_DEFAULTS = {
    "gpt2": {"n_positions": 1024, "n_inner": None, "activation_function": "gelu_new", "resid_pdrop": 0.1,
             "attn_pdrop": 0.1, "layer_norm_epsilon": 1e-5, "initializer_range": 0.02, "scale_attn_weights": True},
    "bart": {"max_position_embeddings": 1024, "activation_function": "gelu", "dropout": 0.1, "attention_dropout": 0.0,
             "init_std": 0.02, "scale_embedding": False},
    "t5": {"d_kv": 64, "d_ff": 2048, "num_decoder_layers": None, "relative_attention_num_buckets": 32,
           "relative_attention_max_distance": 128, "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6,
           "feed_forward_proj": "relu"},
}
# Options of these classes that flaxlm has no equivalent for: config.json key -> the only value flaxlm runs.
_GENERATIVE_FIXED = {
    "gpt2": {"add_cross_attention": False, "scale_attn_by_inverse_layer_idx": False, "is_encoder_decoder": False},
    # Older BART configs spell out the post-LN layout; mBART-style variants change it.
    "bart": {"normalize_before": False, "add_final_layer_norm": False, "normalize_embedding": True,
             "static_position_embeddings": False, "add_bias_logits": False},
    "t5": {"is_decoder": False},
}


def generative_config_from_hf(hf: dict, family: Family) -> ModelConfig:
  """The flaxlm ModelConfig of a GPT-2, T5 or BART config.json, refusing options flaxlm cannot run (the error
  names the config.json key)."""
  if hf.get("model_type", family.model_type) != family.model_type:
    raise ConversionError(f"config.json model_type {hf['model_type']!r} does not match its architecture "
                          f"(a {family.model_type} model)")
  defaults = _GENERATIVE_DEFAULTS[family.model_type]

  def value(key):
    if key in hf:
      return hf[key]
    if key in defaults:
      return defaults[key]
    raise ConversionError(f"config.json lacks {key!r}")

  for key, allowed in _GENERATIVE_FIXED[family.model_type].items():
    if key in hf and hf[key] is not None and hf[key] != allowed:
      raise ConversionError(f"config.json {key}={json.dumps(hf[key])}: flaxlm's {family.model_type} model needs "
                            f"{json.dumps(allowed)}")

  def activation(key, name):
    if name not in _ACTIVATIONS:
      raise ConversionError(f"config.json {key}={name!r}: flaxlm has {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]

  tie = bool(hf.get("tie_word_embeddings", True))
  if family is GPT2:
    d, heads = value("n_embd"), value("n_head")
    if d % heads:
      raise ConversionError(f"config.json n_embd {d} is not divisible by n_head {heads}")
    return ModelConfig(
        vocab_size=value("vocab_size"), hidden_size=d, num_layers=value("n_layer"), num_heads=heads,
        mlp_dim=value("n_inner") or 4 * d, max_position_embeddings=value("n_positions"), type_vocab_size=0,
        dropout_rate=value("resid_pdrop"), attention_dropout_rate=value("attn_pdrop"),
        layer_norm_eps=value("layer_norm_epsilon"), initializer_range=value("initializer_range"),
        pre_layer_norm=True, tie_embeddings=tie, embedding_norm=False,
        activation=activation("activation_function", value("activation_function")),
        scale_attention=bool(value("scale_attn_weights")))
  if family is BART:
    d, heads = value("d_model"), value("encoder_attention_heads")
    for encoder_key, decoder_key in (("encoder_attention_heads", "decoder_attention_heads"),
                                     ("encoder_ffn_dim", "decoder_ffn_dim")):
      if value(decoder_key) != value(encoder_key):
        raise ConversionError(f"config.json {decoder_key}={value(decoder_key)} differs from {encoder_key}="
                              f"{value(encoder_key)}: flaxlm's encoder and decoder layers have the same shape")
    if d % heads:
      raise ConversionError(f"config.json d_model {d} is not divisible by encoder_attention_heads {heads}")
    return ModelConfig(
        vocab_size=value("vocab_size"), hidden_size=d, num_layers=value("encoder_layers"),
        num_decoder_layers=value("decoder_layers"), num_heads=heads, mlp_dim=value("encoder_ffn_dim"),
        max_position_embeddings=value("max_position_embeddings"), type_vocab_size=0, dropout_rate=value("dropout"),
        attention_dropout_rate=value("attention_dropout"), layer_norm_eps=1e-5,  # BART's LayerNorms: torch's default.
        initializer_range=value("init_std"), pre_layer_norm=False, tie_embeddings=tie,
        activation=activation("activation_function", value("activation_function")),
        embedding_scale=bool(value("scale_embedding")), output_bias=True)
  # T5: "gated-gelu" means the tanh GELU (as transformers reads it); otherwise [gated-]ACTIVATION.
  projection = value("feed_forward_proj")
  parts = projection.split("-")
  if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
    raise ConversionError(f"config.json feed_forward_proj={projection!r}: expected ACTIVATION or gated-ACTIVATION")
  name = "gelu_new" if projection == "gated-gelu" else parts[-1]
  if name not in _ACTIVATIONS:
    raise ConversionError(f"config.json feed_forward_proj={projection!r}: flaxlm has the activations "
                          f"{sorted(_ACTIVATIONS)}")
  d, heads, d_kv = value("d_model"), value("num_heads"), value("d_kv")
  return ModelConfig(
      vocab_size=value("vocab_size"), hidden_size=d, num_layers=value("num_layers"),
      num_decoder_layers=value("num_decoder_layers") or value("num_layers"), num_heads=heads, mlp_dim=value("d_ff"),
      max_position_embeddings=hf.get("n_positions", 512),  # No table: the length data.max_seq_len is checked against.
      type_vocab_size=0, dropout_rate=value("dropout_rate"), attention_dropout_rate=value("dropout_rate"),
      layer_norm_eps=value("layer_norm_epsilon"), pre_layer_norm=True, tie_embeddings=tie, embedding_norm=False,
      norm_type="rms", use_bias=False,
      position_embedding="relative", relative_buckets=value("relative_attention_num_buckets"),
      relative_max_distance=value("relative_attention_max_distance"), activation=_ACTIVATIONS[name],
      gated_mlp=len(parts) == 2, scale_attention=False, scale_tied_logits=tie,
      attention_head_dim=0 if d_kv * heads == d else d_kv)


def hf_labels(hf: dict) -> list[str]:
  """Label names in id order from id2label (JSON keys are strings), else num_labels placeholders."""
  if hf.get("id2label"):
    id2label = {int(k): v for k, v in hf["id2label"].items()}
    if sorted(id2label) != list(range(len(id2label))):
      raise ConversionError(f"config.json id2label has ids {sorted(id2label)}, not 0..{len(id2label) - 1}")
    return [id2label[i] for i in range(len(id2label))]
  return [f"LABEL_{i}" for i in range(hf.get("num_labels", 2))]  # Hugging Face's own default.


def hf_config(cfg: ModelConfig, family: Family, architecture: str, tokenizer: Tokenizer,
              labels: list[str] | None) -> dict:
  """The config.json that makes `architecture` rebuild this flaxlm model exactly."""
  offset = position_offset(family, tokenizer.pad_id)
  out = {"architectures": [architecture], "model_type": family.model_type, "vocab_size": cfg.vocab_size,
         "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
         "intermediate_size": cfg.mlp_dim, "hidden_act": "gelu", "hidden_dropout_prob": cfg.dropout_rate,
         "attention_probs_dropout_prob": cfg.attention_dropout_rate,
         "max_position_embeddings": cfg.max_position_embeddings + offset, "type_vocab_size": cfg.type_vocab_size,
         "initializer_range": cfg.initializer_range, "layer_norm_eps": cfg.layer_norm_eps,
         "pad_token_id": tokenizer.pad_id, "position_embedding_type": "absolute", "torch_dtype": "float32"}
  if family is ROBERTA:
    out.update(bos_token_id=tokenizer.cls_id, eos_token_id=tokenizer.sep_id)
  if labels:
    out["id2label"] = {str(i): label for i, label in enumerate(labels)}
    out["label2id"] = {label: i for i, label in enumerate(labels)}
  return out


# ----------------------------------------------------------------------------- weights


def read_weights(hf_dir: str) -> tuple[dict[str, np.ndarray], str]:
  """(name -> float32 array, the file read) of a checkpoint directory, safetensors first."""
  for index_name, reader in ((SAFETENSORS_INDEX, _read_safetensors), (TORCH_BIN_INDEX, _read_torch_bin)):
    index_path = os.path.join(hf_dir, index_name)
    if os.path.isfile(index_path):
      shards = sorted(set(read_json(index_path).get("weight_map", {}).values()))
      state = {}
      for shard in shards:
        state.update(reader(os.path.join(hf_dir, shard)))
      return state, index_path
  for name, reader in ((SAFETENSORS, _read_safetensors), (TORCH_BIN, _read_torch_bin)):
    path = os.path.join(hf_dir, name)
    if os.path.isfile(path):
      return reader(path), path
  raise ConversionError(f"no weights in {hf_dir}: expected {SAFETENSORS}, {TORCH_BIN} or a sharded index "
                        f"({SAFETENSORS_INDEX}, {TORCH_BIN_INDEX})")


def _as_float32(value) -> np.ndarray:
  value = np.asarray(value)
  return value.astype(np.float32) if np.issubdtype(value.dtype, np.floating) else value


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors import safe_open
  from safetensors.numpy import load_file
  try:
    return {name: _as_float32(value) for name, value in load_file(path).items()}
  except TypeError:
    # NumPy has no bfloat16; JAX's arrays do, so a bf16 checkpoint is read through them.
    with safe_open(path, framework="flax") as f:
      return {name: _as_float32(f.get_tensor(name).astype("float32")) for name in f.keys()}


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError:
    raise ConversionError(f"reading {path} needs torch (pip install torch); a model.safetensors "
                          f"checkpoint does not") from None
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {name: _as_float32(t.float().numpy() if t.is_floating_point() else t.numpy()) for name, t in state.items()}


def write_safetensors(out_dir: str, state: dict[str, np.ndarray]) -> str:
  """Writes `state` as model.safetensors in the layout transformers loads ("pt" format tag)."""
  from safetensors.numpy import save_file
  path = os.path.join(out_dir, SAFETENSORS)
  save_file({name: np.ascontiguousarray(value) for name, value in state.items()}, path, metadata={"format": "pt"})
  return path


# ----------------------------------------------------------------------------- tokenizers


def find_tokenizer_file(directory: str) -> str:
  """The directory's vocab.txt (WordPiece), else its tokenizer.json."""
  for name in (VOCAB_TXT, TOKENIZER_JSON):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise ConversionError(f"no tokenizer in {directory}: expected {VOCAB_TXT} (WordPiece) or {TOKENIZER_JSON}")


def hf_lowercase(hf_dir: str, tokenizer_file: str) -> bool:
  """Whether the Hugging Face tokenizer lowercases: tokenizer_config.json's do_lower_case, else tokenizer.json's
  normalizer, else BertTokenizer's default (uncased) for a bare vocab.txt."""
  config_path = os.path.join(hf_dir, "tokenizer_config.json")
  if os.path.isfile(config_path):
    config = read_json(config_path)
    if "do_lower_case" in config:
      return bool(config["do_lower_case"])
  if tokenizer_file.endswith(".json"):
    return _normalizer_lowercases(read_json(tokenizer_file).get("normalizer"))
  return True


def _normalizer_lowercases(normalizer) -> bool:
  if not normalizer:
    return False
  if normalizer.get("type") == "Sequence":
    return any(_normalizer_lowercases(n) for n in normalizer.get("normalizers", []))
  return normalizer.get("type") == "Lowercase" or bool(normalizer.get("lowercase"))


def copy_tokenizer(tokenizer_file: str, out_dir: str) -> str:
  """Copies the tokenizer file into `out_dir` under its own name; returns the new path."""
  path = os.path.join(out_dir, os.path.basename(tokenizer_file))
  shutil.copyfile(tokenizer_file, path)
  return path


def write_hf_tokenizer(tokenizer: Tokenizer, out_dir: str, model_max_length: int) -> None:
  """The tokenizer files AutoTokenizer loads: vocab.txt as a BertTokenizer, or tokenizer.json as it is."""
  copy_tokenizer(tokenizer.vocab_file, out_dir)
  names = tokenizer.tokens([tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id])
  specials = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), names))
  if tokenizer.vocab_file.endswith(".json"):
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": specials["cls_token"],
              "eos_token": specials["sep_token"], **specials}
  else:
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": tokenizer.lowercase, "strip_accents": None,
              "tokenize_chinese_chars": True, **specials}
  write_json(os.path.join(out_dir, "tokenizer_config.json"), {**config, "model_max_length": model_max_length})
  write_json(os.path.join(out_dir, "special_tokens_map.json"),
             {k: v for k, v in config.items() if k.endswith("_token")})
