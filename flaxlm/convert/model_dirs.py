"""Whole-directory conversions: a Hugging Face checkpoint to a flaxlm model directory, and back.

A flaxlm model directory is what `--config.init_from` reads and what a training workdir already
is: `config.json` (the flaxlm run config), `vocab.txt` or `tokenizer.json`, and `checkpoints/`.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from flaxlm import config as config_lib
from flaxlm.convert import hf_files
from flaxlm.convert.mapping import (FAMILIES, GENERATIVE_HEADS, HEAD_TASK, ConversionError, all_rules,
                                    architecture_name, flaxlm_to_hf, hf_to_flaxlm, parse_architecture, tied_copies)
from flaxlm.data.tokenizer import Tokenizer
from flaxlm.models import ModelConfig
from flaxlm.train.checkpoint import load_params, params_metadata, save_params


@dataclasses.dataclass(frozen=True)
class Converted:
  """What a conversion did, for the command line to report."""

  architecture: str
  task: str
  model_config: ModelConfig
  num_params: int
  dropped: tuple[str, ...] = ()
  notes: tuple[str, ...] = ()


def _fresh_output_dir(path: str) -> None:
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
    raise ConversionError(f"output directory {path} already exists and is not empty; choose a new one")
  os.makedirs(path, exist_ok=True)


# ----------------------------------------------------------------------------- import


def import_from_hf(hf_dir: str, out_dir: str, architecture: str | None = None) -> Converted:
  """Converts the Hugging Face checkpoint in `hf_dir` into a flaxlm model directory `out_dir`.

  `architecture` overrides config.json's `architectures[0]` (e.g. BertModel to keep only the encoder).
  """
  hf = hf_files.read_json(os.path.join(hf_dir, "config.json"))
  if architecture is None:
    names = hf.get("architectures") or []
    if len(names) != 1:
      raise ConversionError(f"config.json architectures is {names!r}; name one with --architecture "
                            f"(e.g. BertForMaskedLM)")
    architecture = names[0]
  family, head = parse_architecture(architecture)
  if head in GENERATIVE_HEADS:
    return _import_generative(hf_dir, out_dir, hf, architecture, family, head)
  cfg, offset = hf_files.model_config_from_hf(hf, family)
  tokenizer_file = hf_files.find_tokenizer_file(hf_dir)
  lowercase = hf_files.hf_lowercase(hf_dir, tokenizer_file)
  tokenizer = Tokenizer(tokenizer_file, lowercase=lowercase)
  if tokenizer.vocab_size != cfg.vocab_size:
    raise ConversionError(f"vocab size mismatch: {tokenizer_file} has {tokenizer.vocab_size} tokens but config.json "
                          f"vocab_size is {cfg.vocab_size}; flaxlm needs one id per embedding row")
  labels = hf_files.hf_labels(hf) if head in ("classification", "ner") else []
  state, weights_file = hf_files.read_weights(hf_dir)
  with_pooler = any(name.endswith("pooler.dense.weight") for name in state)
  rules = all_rules(cfg, family, head, num_labels=len(labels), with_pooler=with_pooler, position_offset=offset)
  try:
    params, dropped = hf_to_flaxlm(state, rules, family, head)
  except ConversionError as e:
    raise ConversionError(f"{weights_file}: {e}") from None

  _fresh_output_dir(out_dir)
  run_config = _run_config(cfg, head)
  if head == "pretraining":
    run_config.mlm.sentence_objective = "nsp"  # The model has BERT's next-sentence head.
  run_config.task.labels = tuple(labels)
  run_config.tokenizer.lowercase = lowercase
  _write_config(out_dir, run_config)
  hf_files.copy_tokenizer(tokenizer_file, out_dir)
  save_params(out_dir, params)
  notes = () if head != "base" or with_pooler else ("the checkpoint has no pooler; the flaxlm model has none either",)
  return Converted(architecture, run_config.task.name, cfg, _count(params), tuple(dropped), notes)


def _run_config(cfg: ModelConfig, head: str):
  """The base run config with the converted model's architecture and the head's task."""
  run_config = config_lib.base_config()
  for field in dataclasses.fields(ModelConfig):
    value = getattr(cfg, field.name)
    # config.json may say `"hidden_dropout_prob": 0`; the run config's float keys want floats.
    run_config.model[field.name] = float(value) if isinstance(run_config.model[field.name], float) else value
  run_config.task.name = HEAD_TASK[head]
  run_config.data.max_seq_len = min(run_config.data.max_seq_len, cfg.max_position_embeddings)
  return run_config


def _write_config(out_dir: str, run_config) -> None:
  with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config_lib.to_json(run_config))


def _import_generative(hf_dir: str, out_dir: str, hf: dict, architecture: str, family, head: str) -> Converted:
  """GPT-2, T5 or BART: the model, and its tokenizer.json when the checkpoint has one (randomly initialised
  test checkpoints have none; the model directory then has none either and the notes say so)."""
  cfg = hf_files.generative_config_from_hf(hf, family)
  notes = []
  tokenizer_file = os.path.join(hf_dir, hf_files.TOKENIZER_JSON)
  tokenizer = None
  if os.path.isfile(tokenizer_file):
    import tokenizers
    tokenizer = tokenizers.Tokenizer.from_file(tokenizer_file)
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > cfg.vocab_size:
      raise ConversionError(f"vocab size mismatch: {tokenizer_file} has {size} tokens but config.json vocab_size "
                            f"is {cfg.vocab_size}")
    if size < cfg.vocab_size:  # T5 pads its embedding table past the tokenizer (32128 rows for 32100 tokens).
      notes.append(f"{tokenizer_file} has {size} tokens for {cfg.vocab_size} embedding rows; the tokenizer never "
                   f"produces the last {cfg.vocab_size - size}")
  else:
    notes.append(f"no {hf_files.TOKENIZER_JSON} in {hf_dir}: the model directory has no tokenizer; put the "
                 f"model's tokenizer.json there (or set tokenizer.vocab_file) before training or generating")
  state, weights_file = hf_files.read_weights(hf_dir)
  try:
    params, dropped = hf_to_flaxlm(state, all_rules(cfg, family, head), family, head, tied=tied_copies(cfg, family))
  except ConversionError as e:
    raise ConversionError(f"{weights_file}: {e}") from None

  _fresh_output_dir(out_dir)
  run_config = _run_config(cfg, head)
  run_config.tokenizer.lowercase = False  # GPT-2, T5 and BART tokenizers keep the text's case.
  if head == "seq2seq":  # The objective the checkpoint was pretrained with; a fine-tuning config sets its own.
    run_config.seq2seq.objective = "span_corruption" if family.model_type == "t5" else "text_infilling"
  start_id = hf.get("decoder_start_token_id")
  if head == "seq2seq" and tokenizer is not None and start_id is not None and "seq2seq" in run_config:
    # The token the checkpoint's decoder was trained to start from (T5: <pad>, BART: </s>).
    run_config.seq2seq.decoder_start_token = tokenizer.id_to_token(start_id) or ""
  _write_config(out_dir, run_config)
  if tokenizer is not None:
    hf_files.copy_tokenizer(tokenizer_file, out_dir)
  save_params(out_dir, params)
  return Converted(architecture, run_config.task.name, cfg, _count(params), tuple(dropped), tuple(notes))


# ----------------------------------------------------------------------------- export


def head_of(params: dict) -> str:
  """Which head a flaxlm param tree carries, from its top-level names."""
  names = set(params)
  heads = {frozenset({"encoder", "mlm_transform", "mlm_bias"}): "mlm",
           frozenset({"encoder", "mlm_transform", "mlm_bias", "pooler", "seq_relationship"}): "pretraining",
           frozenset({"encoder", "pooler", "classifier"}): "classification",
           frozenset({"encoder", "classifier"}): "ner", frozenset({"encoder", "qa_outputs"}): "qa",
           frozenset({"encoder", "pooler"}): "base", frozenset({"encoder"}): "base"}
  if frozenset(names) not in heads:
    raise ConversionError(f"the flaxlm checkpoint's top-level parameters {sorted(names)} match no Hugging Face "
                          f"model (expected encoder with mlm_transform+mlm_bias (+pooler+seq_relationship), "
                          f"pooler+classifier, classifier, qa_outputs, or pooler alone)")
  return heads[frozenset(names)]


def read_flaxlm_params(directory: str) -> dict:
  """The params of the newest checkpoint of a training workdir or model directory, as NumPy arrays.

  The tree's structure is read from the checkpoint's metadata, so any task's head loads without
  building its model.
  """
  try:
    abstract = params_metadata(directory)  # No sharding: every array is read whole onto the host.
  except FileNotFoundError as e:
    raise ConversionError(str(e)) from None
  return jax.tree.map(np.asarray, load_params(directory, abstract))


def export_to_hf(flaxlm_dir: str, out_dir: str, model_type: str = "bert") -> Converted:
  """Writes the newest checkpoint of a flaxlm workdir or model directory as a Hugging Face checkpoint.

  `model_type` bert or roberta picks the Hugging Face classes; the class follows the head.
  """
  if model_type not in FAMILIES:
    raise ConversionError(f"--model-type {model_type!r} is not one of {sorted(FAMILIES)}")
  family = FAMILIES[model_type]
  config_path = os.path.join(flaxlm_dir, "config.json")
  if not os.path.isfile(config_path):
    raise ConversionError(f"{config_path} not found: is {flaxlm_dir} a flaxlm workdir or model directory?")
  with open(config_path, encoding="utf-8") as f:
    run_config = config_lib.from_json(f.read())
  if run_config.task.name in GENERATIVE_HEADS:
    raise ConversionError(f"{flaxlm_dir} is a {run_config.task.name} model: export to Hugging Face covers BERT and "
                          f"RoBERTa encoders; GPT-2, T5 and BART conversion is import-only")
  tokenizer = Tokenizer(_flaxlm_tokenizer_file(flaxlm_dir, run_config), lowercase=run_config.tokenizer.lowercase)
  cfg = ModelConfig.from_config(run_config.model, tokenizer.vocab_size)
  if cfg.vocab_size != tokenizer.vocab_size:
    raise ConversionError(f"vocab size mismatch: config.model.vocab_size={cfg.vocab_size} but "
                          f"{tokenizer.vocab_file} has {tokenizer.vocab_size} tokens")
  params = read_flaxlm_params(flaxlm_dir)
  head = head_of(params)
  if head == "pretraining" and not family.has_nsp_head:
    raise ConversionError(f"{flaxlm_dir} has a next-sentence head (seq_relationship), which {model_type} models "
                          f"do not have; export it as --model-type bert")
  labels = []
  if head in ("classification", "ner"):
    num_labels = np.shape(params["classifier"]["kernel"])[-1]
    labels = list(run_config.task.labels) or [f"LABEL_{i}" for i in range(num_labels)]
    if len(labels) != num_labels:
      raise ConversionError(f"config.task.labels has {len(labels)} names but classifier/kernel has {num_labels} "
                            f"outputs")
  offset = hf_files.position_offset(family, tokenizer.pad_id)
  rules = all_rules(cfg, family, head, num_labels=len(labels), with_pooler="pooler" in params,
                    position_offset=offset)
  state = flaxlm_to_hf(params, rules)

  architecture = architecture_name(family, head)
  _fresh_output_dir(out_dir)
  hf_files.write_json(os.path.join(out_dir, "config.json"), hf_files.hf_config(cfg, family, architecture, tokenizer,
                                                                              labels))
  hf_files.write_safetensors(out_dir, state)
  hf_files.write_hf_tokenizer(tokenizer, out_dir, model_max_length=cfg.max_position_embeddings)
  notes = []
  if head == "base" and "pooler" not in params:
    notes.append(f"no pooler: {architecture} will initialise its pooler randomly "
                 f"(load with add_pooling_layer=False to leave it out)")
  return Converted(architecture, run_config.task.name, cfg, _count(params), notes=tuple(notes))


def _flaxlm_tokenizer_file(directory: str, run_config) -> str:
  """The workdir's own vocab.txt or tokenizer.json, else the vocab_file the run was configured with."""
  try:
    return hf_files.find_tokenizer_file(directory)
  except ConversionError:
    if run_config.tokenizer.vocab_file and os.path.isfile(run_config.tokenizer.vocab_file):
      return run_config.tokenizer.vocab_file
    raise


def _count(params: dict) -> int:
  return sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params))
