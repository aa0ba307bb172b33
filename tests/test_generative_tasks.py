"""Causal-LM and encoder-decoder tasks: targets, label smoothing, parallel data, packing, BLEU scoring."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import SHARED_DATA
from flaxlm import config as config_lib
from flaxlm.data import build_tokenizer, sources
from flaxlm.tasks import base
from flaxlm.tasks.causal_lm import next_token_targets
from flaxlm.tasks.seq2seq import Seq2SeqTask, span_corruption_chunk_tokens

MULTI30K = os.path.join(SHARED_DATA, "multi30k")


def test_next_token_targets_stay_inside_each_packed_segment():
  ids = np.array([[5, 6, 7, 8, 9, 0]])
  segments = np.array([[1, 1, 1, 2, 2, 0]])
  targets, weights = next_token_targets(jnp.asarray(ids), jnp.asarray(segments))
  # 5->6, 6->7 predicted; 7 ends segment 1 (its successor 8 starts segment 2); 8->9; 9 ends; padding never.
  np.testing.assert_array_equal(targets[0, :5], [6, 7, 8, 9, 0])
  np.testing.assert_array_equal(weights, [[1, 1, 0, 1, 0, 0]])


def test_label_smoothed_cross_entropy_by_hand():
  logits = np.log(np.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]]))
  targets, weights = np.array([[0, 1]]), np.array([[1.0, 1.0]])
  m = base.token_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), 0.1)
  nll = -np.log(0.7) - np.log(0.1)
  # (1 - eps) * nll + eps * mean over the vocab of -log p, per token.
  smoothed = 0.9 * nll + 0.1 * (-np.log([0.7, 0.2, 0.1]).mean() - np.log([0.1, 0.1, 0.8]).mean())
  np.testing.assert_allclose(float(m["nll"][0]), nll, rtol=1e-6)
  np.testing.assert_allclose(float(m["loss"][0]), smoothed, rtol=1e-6)
  assert float(m["accuracy"][0]) == 1.0 and float(m["loss"][1]) == 2.0  # Only the first is argmax-right.
  assert base.with_perplexity({"nll": float(np.log(7.0))})["perplexity"] == pytest.approx(7.0)


def test_span_corruption_chunk_fits_both_sides_by_hand():
  # n=70: 10 noise tokens (round(10.5) is 10) in round(10/3)=3 spans -> inputs 70-10+3+1 = 64, targets 10+3+1 = 14;
  # n=71: 11 noise in 4 spans -> inputs 65 > 64.
  assert span_corruption_chunk_tokens(64, 24, 0.15, 3.0) == 70
  # Target side binding: n=20 -> 3 noise, 1 span -> targets 5 <= 5; n=21 -> 3 noise (3.15), 1 span -> 5; n=24 -> 4
  # noise (3.6), 1 span -> 6 > 5; n=23 -> round(3.45)=3 -> 5.
  assert span_corruption_chunk_tokens(64, 5, 0.15, 3.0) == 23


def test_parallel_files_errors_name_the_file(tmp_path):
  (tmp_path / "t.de").write_text("a\nb\n", encoding="utf-8")
  with pytest.raises(FileNotFoundError, match=r"t\.en"):
    sources.read_parallel(str(tmp_path / "t"), "de", "en")
  (tmp_path / "t.en").write_text("x\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"t\.de has 2 lines but .*t\.en has 1"):
    sources.read_parallel(str(tmp_path / "t"), "de", "en")
  (tmp_path / "t.en").write_text("x\n\n", encoding="utf-8")
  assert sources.read_parallel(str(tmp_path / "t"), "de", "en") == [("a", "x")]  # Empty side: skipped.


def _translation_config(tmp_path, **changes):
  if not os.path.isfile(os.path.join(MULTI30K, "val.de")):
    pytest.skip("needs ../shared/data/multi30k")
  c = _load_experiment("multi30k_translate.py").get_config("smoke")
  c.unlock()
  for key, value in changes.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


def _load_experiment(name):
  import importlib.util
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(root, "experiments", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_translation_rows_pack_pairs_with_matching_segments(tmp_path):
  c = _translation_config(tmp_path)
  tok = build_tokenizer(c, str(tmp_path))
  task = Seq2SeqTask(c, tok)
  train = {s: t for s, t in task.pairs("train")}
  batch = next(iter(task.train_batches(4, 0, 1)))
  seen = 0
  for row in range(4):
    enc_seg, dec_seg = batch["encoder_segment_ids"][row], batch["decoder_segment_ids"][row]
    assert set(enc_seg[enc_seg > 0]) == set(dec_seg[dec_seg > 0])  # Every pair has both sides in the row.
    for segment in set(enc_seg[enc_seg > 0]):
      source = batch["encoder_ids"][row][enc_seg == segment]
      decoder = batch["decoder_ids"][row][dec_seg == segment]
      targets = batch["targets"][row][dec_seg == segment]
      assert source[-1] == tok.eos_id and decoder[0] == tok.bos_id and targets[-1] == tok.eos_id
      np.testing.assert_array_equal(decoder[1:], targets[:-1])  # Teacher forcing: targets shifted by one.
      np.testing.assert_array_equal(batch["encoder_positions"][row][enc_seg == segment], np.arange(len(source)))
      # The pair is a real training pair, both sides decoding to the original text.
      assert train[tok.decode(source[:-1].tolist())] == tok.decode(targets[:-1].tolist())
      seen += 1
  assert seen > 4  # Packed: several pairs a row.


def test_bleu_collector_scores_by_example_index(tmp_path):
  import sacrebleu
  c = _translation_config(tmp_path, **{"seq2seq.eval_max_examples": 3})
  tok = build_tokenizer(c, str(tmp_path))
  task = Seq2SeqTask(c, tok)
  refs = [t for _, t in task.eval_pairs()]
  hyps = [refs[0], "A dog runs.", refs[2]]
  collector = task.eval_collector("")
  # Rows arrive out of order with a padding row (index -1); tokens are decoder start, output, eos, padding.
  order = [2, -1, 0, 1]
  tokens = np.zeros((4, 24), np.int32)
  for row, index in enumerate(order):
    if index >= 0:
      ids = [tok.bos_id, *tok.encode(hyps[index]), tok.eos_id, 7, 7]
      tokens[row, : len(ids)] = ids
  sources_present = np.ones((4, 8), np.int32)
  collector.add({"example_index": np.array(order), "encoder_segment_ids": sources_present}, {"tokens": tokens})
  # A multi-host filler row (all zeros: index 0, no source tokens) must not overwrite example 0.
  collector.add({"example_index": np.zeros(1, np.int32), "encoder_segment_ids": np.zeros((1, 8), np.int32)},
                {"tokens": np.zeros((1, 24), np.int32)})
  out = collector.result({"nll": (np.float32(6.0), np.float32(3.0))})
  assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
  assert 0 < out["bleu"] < 100 and out["bleu_examples"] == 3 and out["perplexity"] == pytest.approx(np.exp(2.0))


# ----------------------------------------------------------------------------- end to end


def _tiny_generative_config(task: str, files, tmp_path):
  from flaxlm import recipes
  c = recipes.generative_base("gpt2" if task == "causal_lm" else "bart", task)
  c.model.update(hidden_size=64, num_layers=2, num_heads=2, mlp_dim=128, max_position_embeddings=64,
                 dropout_rate=0.0, attention_dropout_rate=0.0)
  c.tokenizer.vocab_size = 300
  c.optimizer.update(learning_rate=3e-3, warmup_steps=10, decay="constant")
  c.train.update(batch_size=16, eval_batch_size=16, num_steps=150, log_every=50, eval_every=0, checkpoint_every=150,
                 progress_bar=False)
  c.generate.update(method="greedy", max_new_tokens=12)
  return c


def test_causal_lm_learns_a_sequence_and_generate_continues_it(tmp_path):
  """Trained on counting, greedy decoding with the KV cache continues a count it was never shown whole."""
  from flaxlm.train import loop
  words = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
           "seventeen eighteen nineteen twenty").split()
  # Every run of 4 to 9 consecutive numbers: held-out runs are new, the successor rule is not.
  lines = [" ".join(words[i:i + n]) for n in range(4, 10) for i in range(len(words) - n + 1)] * 8
  corpus = tmp_path / "count.txt"
  corpus.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
  c = _tiny_generative_config("causal_lm", [str(corpus)], tmp_path)
  c.data.update(source="text_files", files=(str(corpus),), max_seq_len=32, eval_fraction=0.2)
  final = loop.run(c, str(tmp_path / "run"))
  # Only the first number and where a run stops are unpredictable: about 2 is the floor here (untrained: ~300).
  assert final["perplexity"] < 2.5 and final["accuracy"] > 0.7, final
  task, params = _trained(tmp_path / "run")
  out = task.generate(params, ["three four", "seven"], c.generate)
  assert out[0].split()[:4] == ["five", "six", "seven", "eight"], out
  assert out[1].split()[:2] == ["eight", "nine"], out
  beam = c.generate.copy_and_resolve_references()
  beam.update(method="beam", num_beams=3)
  assert task.generate(params, ["three four"], beam)[0].split()[:2] == ["five", "six"]


def test_translation_learns_a_word_mapping(tmp_path):
  """A toy 'language' (each word spelled backwards): trained briefly, beam decoding in the eval step scores
  sacreBLEU > 95 on held-out sentences, and `flaxlm.generate` prints the translation."""
  import random
  import subprocess
  import sys
  from flaxlm.train import loop
  rng = random.Random(0)
  vocab = ["red", "blue", "dog", "cat", "runs", "sits", "big", "small", "a", "the"]
  def sentence():
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(2, 5)))
  for split, n in (("train", 2000), ("val", 20)):
    sources_ = [sentence() for _ in range(n)]
    (tmp_path / f"{split}.src").write_text("\n".join(sources_) + "\n", encoding="utf-8")
    (tmp_path / f"{split}.tgt").write_text("\n".join(" ".join(w[::-1] for w in s.split()) for s in sources_) + "\n",
                                           encoding="utf-8")
  c = _tiny_generative_config("seq2seq", None, tmp_path)
  c.model.update(num_decoder_layers=2)
  c.seq2seq.update(objective="translation", source_lang="src", target_lang="tgt", max_target_len=16,
                   label_smoothing=0.1)
  c.data.update(train_file=str(tmp_path / "train"), eval_file=str(tmp_path / "val"), max_seq_len=16)
  c.generate.update(method="beam", num_beams=2)
  c.train.num_steps = 300
  final = loop.run(c, str(tmp_path / "run"))
  assert final["bleu"] > 95.0 and final["bleu_examples"] == 20, final  # Untrained: 0.
  out = subprocess.run([sys.executable, "-m", "flaxlm.generate", "--workdir", str(tmp_path / "run"),
                        "--source", "the big dog sits", "--method", "greedy"], capture_output=True, text=True,
                       env={**os.environ, "XLA_FLAGS": ""}, check=True)
  assert "-> eht gib god stis" in out.stdout, out.stdout + out.stderr


def _trained(workdir):
  from flaxlm.train.trained import load_trained
  _, task, params = load_trained(str(workdir))
  return task, params


def test_init_from_keeps_the_pretrained_decoder_start_token(tmp_path):
  """A fine-tune from an imported BART starts its decoder from </s>, as BART was trained, unless the run says."""
  source = config_lib.base_config()
  source.seq2seq.decoder_start_token = "</s>"
  source.model.hidden_size = 48
  (tmp_path / "config.json").write_text(config_lib.to_json(source), encoding="utf-8")
  run = config_lib.base_config()
  run.init_from = str(tmp_path)
  out = config_lib.with_pretrained_model(run)
  assert (out.seq2seq.decoder_start_token, out.model.hidden_size) == ("</s>", 48)
  run.seq2seq.decoder_start_token = "<s>"
  assert config_lib.with_pretrained_model(run).seq2seq.decoder_start_token == "<s>"
