"""flaxlm.convert for GPT-2, T5 and BART against Hugging Face PyTorch, the independent reference.

Small random-initialised HF models (float32, eval mode, every tensor random: biases, norm gains and
BART's final_logits_bias included) are imported; flaxlm's logits must equal HF's within 1e-4 on
batches whose encoder and decoder sides are padded and attention-masked, both from the full forward
pass and step by step through the key-value cache. Unsupported config keys are refused by name.
"""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers

from flaxlm import config as config_lib
from flaxlm.convert import ConversionError, export_to_hf, import_from_hf, read_flaxlm_params
from flaxlm.convert.__main__ import main as convert_main
from flaxlm.models import (CausalLM, EncoderDecoderLM, ModelConfig, causal_lm_decoder, encoder_decoder_decoder)

TOLERANCE = 1e-4
V = 96
transformers.logging.set_verbosity_error()

HF_MODELS = {
    "gpt2": (transformers.GPT2LMHeadModel, transformers.GPT2Config(
        vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=24)),
    # T5 v1.0: relu feed-forward, tied output layer (decoder output scaled by d_model**-0.5).
    "t5-relu-tied": (transformers.T5ForConditionalGeneration, transformers.T5Config(
        vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=12, feed_forward_proj="relu",
        decoder_start_token_id=0, pad_token_id=0)),
    # T5 v1.1: gated tanh-GELU, untied lm_head, d_kv * num_heads != d_model.
    "t5-gated-gelu-untied": (transformers.T5ForConditionalGeneration, transformers.T5Config(
        vocab_size=V, d_model=32, d_kv=6, d_ff=40, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0)),
    "bart": (transformers.BartForConditionalGeneration, transformers.BartConfig(
        vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=24,
        scale_embedding=True, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)),
}


def random_hf_model(name: str, seed: int = 0):
  """The HF model with every parameter (and BART's final_logits_bias buffer) moved off its initial value."""
  model_class, config = HF_MODELS[name]
  torch.manual_seed(seed)
  model = model_class(config)
  with torch.no_grad():
    for p in model.parameters():  # Tied tensors are one parameter, so they stay tied.
      p.add_(torch.randn_like(p) * 0.1)
    if hasattr(model, "final_logits_bias"):
      model.final_logits_bias.add_(torch.randn_like(model.final_logits_bias))
  return model.eval()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """name -> (HF model, HF dir, flaxlm model dir, Converted), each HF checkpoint saved without a tokenizer."""
  out = {}
  for name in HF_MODELS:
    root = tmp_path_factory.mktemp(name)
    model = random_hf_model(name)
    model.save_pretrained(str(root / "hf"))
    done = import_from_hf(str(root / "hf"), str(root / "flaxlm"))
    out[name] = (model, str(root / "hf"), str(root / "flaxlm"), done)
  return out


def load_model_dir(directory: str):
  """(ModelConfig, params, run config) of an imported model directory."""
  with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
    run_config = config_lib.from_json(f.read())
  cfg = ModelConfig.from_config(run_config.model, run_config.model.vocab_size)
  return cfg, read_flaxlm_params(directory), run_config


def padded(lengths, width, seed):
  """Random ids [B, width] with row b real for its first lengths[b] tokens, and the 0/1 mask."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, V, size=(len(lengths), width)).astype(np.int32)
  mask = (np.arange(width)[None] < np.array(lengths)[:, None]).astype(np.int32)
  return np.where(mask > 0, ids, 1).astype(np.int32), mask


def positions(mask):
  return np.broadcast_to(np.arange(mask.shape[1], dtype=np.int32), mask.shape).copy()


def worst_difference(ours, theirs, mask) -> float:
  return float(np.abs(np.asarray(ours) - theirs)[mask > 0].max())


# ----------------------------------------------------------------------------- logits against HF


def test_gpt2_logits_and_cached_steps_match_hf(imported):
  hf_model, _, directory, done = imported["gpt2"]
  assert (done.architecture, done.task) == ("GPT2LMHeadModel", "causal_lm")
  cfg, params, run_config = load_model_dir(directory)
  assert run_config.task.name == "causal_lm" and set(params) == {"decoder"}  # Tied: no lm_head of its own.
  assert (cfg.pre_layer_norm, cfg.activation, cfg.embedding_norm, cfg.type_vocab_size) == (True, "gelu_tanh", False, 0)

  ids, mask = padded([12, 7, 3], 12, seed=0)
  with torch.no_grad():
    theirs = hf_model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits.numpy()
  model = CausalLM(cfg)
  ours = jax.jit(model.apply)({"params": params}, ids, mask, positions(mask))
  difference = worst_difference(ours, theirs, mask)
  print(f"GPT-2: max |flaxlm - HF| {difference:.2e} (logits up to {np.abs(theirs).max():.1f})")
  assert difference < TOLERANCE

  # The cached step-by-step path, fed the same (left-aligned) rows, against HF's logits.
  cache, step_fn = causal_lm_decoder(model, params, ids.shape[0], ids.shape[1])
  stepped = []
  for t in range(ids.shape[1]):
    logits_BV, cache = step_fn(cache, ids[:, t], np.int32(t))
    stepped.append(np.asarray(logits_BV))
  assert worst_difference(np.stack(stepped, 1), theirs, mask) < TOLERANCE


@pytest.mark.parametrize("name", ["t5-relu-tied", "t5-gated-gelu-untied", "bart"])
def test_encoder_decoder_logits_and_cached_steps_match_hf(name, imported):
  hf_model, _, directory, done = imported[name]
  assert (done.architecture, done.task) == (type(hf_model).__name__, "seq2seq")
  cfg, params, run_config = load_model_dir(directory)
  assert run_config.task.name == "seq2seq"
  hf_config = hf_model.config
  expected_tree = {"encoder", "decoder"} | ({"output_bias"} if name == "bart" else set()) | (
      set() if hf_config.tie_word_embeddings else {"lm_head"})
  assert set(params) == expected_tree
  if name.startswith("t5"):
    assert cfg.head_dim == hf_config.d_kv and cfg.norm_type == "rms" and not cfg.use_bias
    assert cfg.gated_mlp == (name == "t5-gated-gelu-untied")
    assert cfg.scale_tied_logits == hf_config.tie_word_embeddings
    assert params["encoder"]["relative_bias"]["embedding"].shape == (hf_config.relative_attention_num_buckets, 4)
  else:
    assert cfg.embedding_scale and cfg.output_bias and not cfg.pre_layer_norm
    # BART's two offset rows are not flaxlm positions.
    assert params["decoder"]["embeddings"]["position"]["embedding"].shape == (24, 32)

  # 15 source tokens > relative_attention_max_distance 12: far buckets are exercised.
  src, src_mask = padded([15, 9, 4], 15, seed=1)
  tgt, tgt_mask = padded([8, 5, 2], 8, seed=2)
  with torch.no_grad():
    theirs = hf_model(input_ids=torch.tensor(src, dtype=torch.long), attention_mask=torch.tensor(src_mask),
                      decoder_input_ids=torch.tensor(tgt, dtype=torch.long),
                      decoder_attention_mask=torch.tensor(tgt_mask)).logits.numpy()
  model = EncoderDecoderLM(cfg)
  ours = jax.jit(model.apply)({"params": params}, src, src_mask, positions(src_mask), tgt, tgt_mask,
                              positions(tgt_mask))
  difference = worst_difference(ours, theirs, tgt_mask)
  print(f"{name}: max |flaxlm - HF| {difference:.2e} (logits up to {np.abs(theirs).max():.1f})")
  assert difference < TOLERANCE

  cache, step_fn = encoder_decoder_decoder(model, params, src, src_mask, tgt.shape[1])
  stepped = []
  for t in range(tgt.shape[1]):
    logits_BV, cache = step_fn(cache, tgt[:, t], np.int32(t))
    stepped.append(np.asarray(logits_BV))
  assert worst_difference(np.stack(stepped, 1), theirs, tgt_mask) < TOLERANCE


# ----------------------------------------------------------------------------- tokenizer, command line, errors


def test_no_tokenizer_is_noted_and_a_tokenizer_json_is_copied(imported, tmp_path, capsys):
  done = imported["gpt2"][3]
  assert any("no tokenizer.json" in note for note in done.notes)
  assert not os.path.exists(os.path.join(imported["gpt2"][2], "tokenizer.json"))

  import tokenizers
  words = ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(V - 4)]
  tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  hf_dir = str(tmp_path / "bart")
  imported["bart"][0].save_pretrained(hf_dir)
  tokenizer.save(os.path.join(hf_dir, "tokenizer.json"))
  assert convert_main(["--from-hf", hf_dir, "--to", str(tmp_path / "flaxlm")]) == 0
  printed = capsys.readouterr().out
  assert "BartForConditionalGeneration (task seq2seq), 2 layers, hidden 32, 4 heads, vocab 96" in printed
  assert "note:" not in printed
  with open(os.path.join(hf_dir, "tokenizer.json"), encoding="utf-8") as a, \
       open(tmp_path / "flaxlm" / "tokenizer.json", encoding="utf-8") as b:
    assert a.read() == b.read()
  _, _, run_config = load_model_dir(str(tmp_path / "flaxlm"))
  assert run_config.seq2seq.decoder_start_token == "</s>"  # BART's decoder_start_token_id 2.
  assert run_config.tokenizer.lowercase is False


def _edited_copy(imported, name, tmp_path, **changes):
  """A copy of the saved HF checkpoint `name` with config.json keys changed."""
  model = imported[name][0]
  directory = str(tmp_path / f"{name}-edited")
  model.save_pretrained(directory)
  path = os.path.join(directory, "config.json")
  with open(path, encoding="utf-8") as f:
    config = json.load(f)
  config.update(changes)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(config, f)
  return directory


@pytest.mark.parametrize("name,changes,message", [
    ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "config.json scale_attn_by_inverse_layer_idx=true"),
    ("gpt2", {"activation_function": "swish"}, "activation_function='swish'"),
    ("gpt2", {"add_cross_attention": True}, "add_cross_attention=true"),
    ("t5-relu-tied", {"feed_forward_proj": "gated-silu"}, "feed_forward_proj='gated-silu'"),
    ("bart", {"decoder_attention_heads": 2}, "decoder_attention_heads=2 differs from encoder_attention_heads=4"),
    ("bart", {"normalize_before": True}, "normalize_before=true"),
    # A mismatched shape key: the first tensor it changes is named with both shapes.
    ("gpt2", {"n_embd": 48}, r"transformer\.wte\.weight has shape \(96, 32\), but config.json implies \(96, 48\)"),
    ("t5-relu-tied", {"d_kv": 4}, r"encoder\.block\.0\.layer\.0\.SelfAttention\.q\.weight has shape \(32, 32\)"),
    # Tied in config.json, but the checkpoint's lm_head is its own.
    ("t5-gated-gelu-untied", {"tie_word_embeddings": True}, r"lm_head\.weight differs from the shared word"),
])
def test_unsupported_or_mismatched_config_keys_are_named(name, changes, message, imported, tmp_path):
  directory = _edited_copy(imported, name, tmp_path, **changes)
  with pytest.raises(ConversionError, match=message):
    import_from_hf(directory, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_old_gpt2_mask_buffers_and_stored_tied_copies_are_accepted(imported, tmp_path):
  """Older GPT-2 checkpoints store each block's causal-mask buffers, and some store the tied lm_head."""
  from safetensors.numpy import load_file, save_file
  directory = _edited_copy(imported, "gpt2", tmp_path)
  path = os.path.join(directory, "model.safetensors")
  state = load_file(path)
  state["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 24, 24), np.float32))
  state["transformer.h.1.attn.masked_bias"] = np.array(-1e4, np.float32)
  state["lm_head.weight"] = state["transformer.wte.weight"].copy()
  save_file(state, path, metadata={"format": "pt"})
  import_from_hf(directory, str(tmp_path / "ok"))
  state["lm_head.weight"][0, 0] += 1.0
  save_file(state, path, metadata={"format": "pt"})
  with pytest.raises(ConversionError, match=r"lm_head\.weight differs from the shared word embeddings"):
    import_from_hf(directory, str(tmp_path / "refused"))


def test_relative_position_buckets_equal_t5s_own():
  from transformers.models.t5.modeling_t5 import T5Attention

  from flaxlm.models.layers import relative_position_buckets
  relative = np.arange(-300, 301)
  for num_buckets, max_distance in ((32, 128), (8, 12), (16, 50), (64, 200)):
    for bidirectional in (True, False):
      theirs = T5Attention._relative_position_bucket(torch.tensor(relative), bidirectional=bidirectional,
                                                     num_buckets=num_buckets, max_distance=max_distance).numpy()
      ours = np.asarray(relative_position_buckets(relative, num_buckets, max_distance, bidirectional))
      np.testing.assert_array_equal(ours, theirs, err_msg=f"{num_buckets} {max_distance} {bidirectional}")


def test_export_of_generative_models_is_refused_as_import_only(imported, tmp_path):
  with pytest.raises(ConversionError, match="import-only"):
    export_to_hf(imported["t5-relu-tied"][2], str(tmp_path / "hf"))


def test_imported_config_is_a_full_run_config(imported):
  """config.json is a whole flaxlm run config (every base key) whose model section rebuilds the same ModelConfig."""
  base = json.loads(config_lib.to_json(config_lib.base_config()))
  for name, (_, _, directory, done) in imported.items():
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
      written = json.load(f)
    assert {k: set(v) if isinstance(v, dict) else None for k, v in written.items()} == {
        k: set(v) if isinstance(v, dict) else None for k, v in base.items()}, name
    cfg, _, _ = load_model_dir(directory)
    assert dataclasses.asdict(cfg) == dataclasses.asdict(done.model_config), name
