"""Generation against Hugging Face PyTorch's `generate`, the independent reference: random GPT-2, T5 and BART
models (with a trained byte-level BPE saved beside them) are imported with flaxlm.convert, loaded as a run
would be, and flaxlm's greedy and beam-search outputs must equal HF's token for token."""

import os
import shutil

import numpy as np
import pytest
import torch
import transformers

from flaxlm import config as config_lib
from flaxlm.convert import import_from_hf
from flaxlm.data.tokenizer import Tokenizer, train_bytelevel_bpe
from flaxlm.train.trained import load_trained

transformers.logging.set_verbosity_error()
V = 320
PROMPTS = ["A man is riding a bike", "Two dogs", "The children play in the park near"]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
  from flaxlm.data import sources
  with open(sources.python_docs_corpus(), encoding="utf-8") as f:
    texts = f.read().split("\n\n")[:400] + PROMPTS * 5
  return train_bytelevel_bpe(texts, V, str(tmp_path_factory.mktemp("bpe") / "tokenizer.json"))


def _configs(tok):
  ids = dict(pad_token_id=tok.pad_id, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
  return {
      "gpt2": (transformers.GPT2LMHeadModel, transformers.GPT2Config(
          vocab_size=V, n_embd=48, n_layer=2, n_head=4, n_positions=64, **ids)),
      "t5": (transformers.T5ForConditionalGeneration, transformers.T5Config(
          vocab_size=V, d_model=48, d_kv=12, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj="relu",
          decoder_start_token_id=tok.pad_id, **ids)),
      "bart": (transformers.BartForConditionalGeneration, transformers.BartConfig(
          vocab_size=V, d_model=48, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
          decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
          decoder_start_token_id=tok.eos_id, forced_bos_token_id=None, forced_eos_token_id=None, **ids)),
  }


@pytest.fixture(scope="module", params=["gpt2", "t5", "bart"])
def converted(request, tokenizer_file, tmp_path_factory):
  """(HF model, flaxlm config, task, params) for a random model whose logits are far from ties."""
  tok = Tokenizer(tokenizer_file)
  model_class, hf_config = _configs(tok)[request.param]
  torch.manual_seed(0)
  model = model_class(hf_config)
  with torch.no_grad():  # Large random weights: well separated logits, so float rounding never flips an argmax.
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.3)
  model.eval()
  root = tmp_path_factory.mktemp(request.param)
  model.save_pretrained(str(root / "hf"))
  shutil.copyfile(tokenizer_file, root / "hf" / "tokenizer.json")
  import_from_hf(str(root / "hf"), str(root / "flaxlm"))
  config, task, params = load_trained(str(root / "flaxlm"))
  return request.param, model, config, task, params, tok


def _hf_outputs(name, model, tok, **kwargs):
  """HF's generated text per prompt: its tokens up to (not including) eos, decoded."""
  out = []
  for prompt in PROMPTS:
    ids = tok.encode(prompt)
    with torch.no_grad():
      if name == "gpt2":  # flaxlm's causal LM starts every prompt with bos.
        inputs = torch.tensor([[tok.bos_id, *ids]])
        generated = model.generate(inputs, max_new_tokens=NEW_TOKENS, **kwargs)[0, inputs.shape[1]:]
      else:  # The source ends with eos; the decoder starts from the model's decoder_start_token_id.
        generated = model.generate(torch.tensor([[*ids, tok.eos_id]]), max_new_tokens=NEW_TOKENS, **kwargs)[0, 1:]
    generated = generated.tolist()
    out.append(tok.decode(generated[: generated.index(tok.eos_id)] if tok.eos_id in generated else generated))
  return out


def _flaxlm_outputs(config, task, params, tok, **changes):
  gen = config.generate.copy_and_resolve_references()
  gen.update(max_new_tokens=NEW_TOKENS, **changes)
  return task.generate(params, PROMPTS, gen)


def test_greedy_equals_hf_generate(converted):
  name, model, config, task, params, tok = converted
  want = _hf_outputs(name, model, tok, do_sample=False, num_beams=1)
  assert all(want), f"HF generated nothing for some prompt: the comparison would be empty ({want})"
  assert _flaxlm_outputs(config, task, params, tok, method="greedy") == want


def test_beam_search_equals_hf_generate(converted):
  name, model, config, task, params, tok = converted
  want = _hf_outputs(name, model, tok, do_sample=False, num_beams=3, length_penalty=1.0, early_stopping=False)
  assert _flaxlm_outputs(config, task, params, tok, method="beam", num_beams=3, length_penalty=1.0) == want
