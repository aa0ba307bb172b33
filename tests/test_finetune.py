"""Fine-tuning end to end on real data (SST-2, CoNLL-2003 and a QA set built from CoNLL), tiny models."""

import copy
import importlib.util
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from flaxlm.data import conll
from flaxlm.tasks.metrics import iob2_spans
from flaxlm.train import loop
from flaxlm.train.metrics import read_metrics

from conftest import SHARED_DATA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason=f"shared data not found at {SHARED_DATA}")


def _experiment(name, arg):
  path = os.path.join(ROOT, "experiments", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _final_eval(workdir):
  evals = [r for r in read_metrics(workdir) if any(k.startswith("eval/") for k in r)]
  return {k[5:]: v for k, v in evals[-1].items() if k.startswith("eval/")}


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sst2"))
  config = _experiment("sst2_finetune", f"smoke,data_dir={SHARED_DATA}/sst2")
  config.train.progress_bar = False
  loop.run(config, workdir)
  return config, workdir


@needs_shared
def test_sst2_smoke_beats_the_majority_class(sst2_run):
  _, workdir = sst2_run
  final = _final_eval(workdir)
  assert final["num_examples"] == 872  # The whole dev set, nothing dropped.
  assert final["accuracy"] > 0.65  # The majority class is 51% of SST-2 dev.
  with open(os.path.join(workdir, "best", "best.json"), encoding="utf-8") as f:
    best = json.load(f)
  assert best["metric"] == "accuracy" and best["value"] == pytest.approx(final["accuracy"])


@needs_shared
def test_packed_and_padded_rows_give_the_same_predictions(sst2_run):
  config, workdir = sst2_run
  results = {}
  for packed in (True, False):
    c = copy.deepcopy(config)
    c.data.pack_examples = packed
    run = loop.Run(c, workdir)
    from flaxlm.train.checkpoint import load_params
    params = load_params(workdir, run.abstract_state.params)
    results[packed] = run.evaluate(params)
  assert results[True]["num_examples"] == results[False]["num_examples"] == 872
  assert results[True]["accuracy"] == pytest.approx(results[False]["accuracy"], abs=1.5 / 872)
  assert results[True]["loss"] == pytest.approx(results[False]["loss"], rel=1e-4)


@needs_shared
def test_predict_prints_label_and_probabilities(sst2_run):
  _, workdir = sst2_run
  out = subprocess.run([sys.executable, "-m", "flaxlm.predict", "--workdir", workdir, "--text",
                        "Hello, my dog is cute", "--text", "a dull , lifeless film ."], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""})
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  assert lines[0] == "Hello, my dog is cute" and lines[1].startswith("  label ")
  probs = [float(x.rstrip(")")) for x in lines[1].split("(")[1].split()[1::2]]
  assert len(probs) == 2 and sum(probs) == pytest.approx(1.0, abs=2e-3)
  assert "best checkpoint" in out.stderr


@needs_shared
def test_conll_ner_smoke_finds_entities(tmp_path):
  config = _experiment("conll03_ner", f"smoke,data_dir={SHARED_DATA}/conll2003")
  config.train.progress_bar = False
  loop.run(config, str(tmp_path))
  final = _final_eval(str(tmp_path))
  valid = conll.read_conll(f"{SHARED_DATA}/conll2003/valid.txt")
  assert final["num_words"] == sum(len(s.words) for s in valid)  # Every dev word was tagged.
  assert final["f1"] > 0.25  # Chance span F1 is about 0.


def _qa_file(src, out, limit):
  """SQuAD-format questions from CoNLL: "Who is named?" / "Which place is named?" -> the one PER / LOC span."""
  data, count = [], 0
  for i, sentence in enumerate(conll.read_conll(src)):
    spans = {}
    for kind, a, b in iob2_spans(sentence.tags):
      spans.setdefault(kind, []).append((a, b))
    context, qas = " ".join(sentence.words), []
    for kind, question in (("PER", "Who is named?"), ("LOC", "Which place is named?")):
      if len(spans.get(kind, [])) == 1:
        a, b = spans[kind][0]
        start = len(" ".join(sentence.words[:a])) + (1 if a else 0)
        qas.append({"id": f"{i}-{kind}", "question": question,
                    "answers": [{"text": " ".join(sentence.words[a:b + 1]), "answer_start": start}]})
    if qas:
      data.append({"title": str(i), "paragraphs": [{"context": context, "qas": qas}]})
      count += len(qas)
    if count >= limit:
      break
  with open(out, "w", encoding="utf-8") as f:
    json.dump({"version": "1.1", "data": data}, f)
  return out


@needs_shared
def test_qa_smoke_learns_to_point_at_answers(tmp_path):
  train = _qa_file(f"{SHARED_DATA}/conll2003/train.txt", str(tmp_path / "train.json"), 3000)
  dev = _qa_file(f"{SHARED_DATA}/conll2003/valid.txt", str(tmp_path / "dev.json"), 300)
  config = _experiment("squad_qa", "smoke")
  config.data.train_file, config.data.eval_file = train, dev
  config.train.progress_bar = False
  loop.run(config, str(tmp_path / "w"))
  final = _final_eval(str(tmp_path / "w"))
  assert final["f1"] > 30 and final["exact_match"] > 15  # Guessing a span scores a few points.


def test_init_from_loads_the_encoder_and_its_vocab(tiny_config, tmp_path):
  pretrained = str(tmp_path / "pretrained")
  source = copy.deepcopy(tiny_config)
  source.train.num_steps, source.train.checkpoint_every = 2, 0
  loop.run(source, pretrained)
  config = _experiment("sst2_finetune", "smoke")
  config.init_from = pretrained
  config.data.train_file = config.data.eval_file = _tiny_sst2(tmp_path)
  config.data.max_seq_len = 64  # The source model has 64 positions.
  from flaxlm import config as config_lib
  config = config_lib.with_pretrained_model(config)
  assert config.model.hidden_size == tiny_config.model.hidden_size  # Architecture follows the source.
  run = loop.Run(config, str(tmp_path / "finetune"))
  assert run.tokenizer.vocab == loop.Run(source, pretrained).tokenizer.vocab
  state = run.load_pretrained(run.init_state())
  from flaxlm.train.checkpoint import load_params
  source_run = loop.Run(source, pretrained)
  trained = load_params(pretrained, source_run.abstract_state.params)
  for a, b in zip(jax.tree.leaves(state.params["encoder"]), jax.tree.leaves(trained["encoder"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert set(state.params) == {"encoder", "pooler", "classifier"}


def _tiny_sst2(tmp_path):
  path = tmp_path / "tiny.tsv"
  path.write_text("sentence\tlabel\n" + "".join(f"the function {i} returns\t{i % 2}\n" for i in range(40)),
                  encoding="utf-8")
  return str(path)


def test_mnli_reports_matched_and_mismatched_and_stsb_correlations(tmp_path):
  rng = np.random.default_rng(0)
  words = ["cat", "dog", "sleeps", "runs", "the", "a", "not", "big", "small", "house"]

  def sentence():
    return " ".join(rng.choice(words, size=rng.integers(3, 8)))

  header = "index\tgenre\tsentence1\tsentence2\tgold_label\n"
  for name in ("train", "dev_matched", "dev_mismatched"):
    rows = "".join(f"{i}\tx\t{sentence()}\t{sentence()}\t{['entailment', 'neutral', 'contradiction'][i % 3]}\n"
                   for i in range(30))
    (tmp_path / f"{name}.tsv").write_text(header + rows, encoding="utf-8")
  config = _experiment("glue_finetune", f"task=mnli,smoke,data_dir={tmp_path}")
  config.train.update(num_steps=4, progress_bar=False)
  final = loop.run(config, str(tmp_path / "mnli"))
  assert {"matched_accuracy", "mismatched_accuracy", "matched_num_examples"} <= set(final)
  assert final["matched_num_examples"] == final["mismatched_num_examples"] == 30

  stsb = "genre\tsentence1\tsentence2\tscore\n" + "".join(
      f"x\t{sentence()}\t{sentence()}\t{i % 6}.0\n" for i in range(30))
  for name in ("train", "dev"):
    (tmp_path / f"{name}.tsv").write_text(stsb, encoding="utf-8")
  config = _experiment("glue_finetune", f"task=stsb,smoke,data_dir={tmp_path}")
  config.train.update(num_steps=4, progress_bar=False)
  final = loop.run(config, str(tmp_path / "stsb"))
  assert {"pearson", "spearman", "loss"} <= set(final) and "accuracy" not in final
