"""Every experiment file loads, validates (full size and smoke), and documents its run command."""

import glob
import importlib.util
import os

import numpy as np
import pytest

from flaxlm import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py")))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_there_are_experiments():
  names = {os.path.basename(p) for p in EXPERIMENTS}
  assert {"demo.py", "bert_base_mlm.py", "bert_large_mlm.py"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_validates_and_documents_its_command(path):
  module = _load(path)
  name = os.path.basename(path)
  assert f"python -m flaxlm.main --config experiments/{name}" in module.__doc__
  assert f"experiments/{name}:smoke" in module.__doc__
  smoke = module.get_config("smoke")
  config_lib.validate(smoke)
  full = module.get_config(None)
  if full.task.name in ("ner", "qa") and not full.data.train_file:
    # These read local files only; the full-size config needs its data_dir, so borrow the smoke run's.
    full.data.train_file, full.data.eval_file = smoke.data.train_file, smoke.data.eval_file
  config_lib.validate(full)
  with pytest.raises(config_lib.ConfigError, match="unknown config argument"):
    module.get_config("no_such_argument")


@pytest.mark.parametrize("name,size", [("bert_base_mlm.py", (12, 768, 12, 3072)),
                                       ("bert_large_mlm.py", (24, 1024, 16, 4096))])
def test_bert_recipes_match_the_paper(name, size):
  module = _load(os.path.join(ROOT, "experiments", name))
  one, two = module.get_config("phase=1"), module.get_config("phase=2")
  m = one.model
  assert (m.num_layers, m.hidden_size, m.num_heads, m.mlp_dim) == size
  assert (one.train.batch_size, one.optimizer.learning_rate, one.optimizer.warmup_steps) == (256, 1e-4, 10_000)
  assert (one.data.max_seq_len, one.mlm.max_predictions_per_seq, one.train.num_steps) == (128, 20, 900_000)
  assert (two.data.max_seq_len, two.mlm.max_predictions_per_seq, two.train.num_steps) == (512, 80, 1_000_000)
  assert one.optimizer.schedule_steps == two.optimizer.schedule_steps == 1_000_000
  assert one.mlm.sentence_objective == two.mlm.sentence_objective == "nsp"  # Next-sentence prediction, as published.
  with pytest.raises(config_lib.ConfigError, match="phase must be 1 or 2"):
    module.get_config("phase=3")


def test_roberta_recipe_matches_the_paper():
  c = _load(os.path.join(ROOT, "experiments", "roberta_mlm.py")).get_config(None)
  assert (c.model.num_layers, c.model.hidden_size, c.model.type_vocab_size) == (12, 768, 1)
  assert (c.train.batch_size, c.train.num_steps, c.data.max_seq_len) == (8192, 500_000, 512)
  o = c.optimizer
  assert (o.learning_rate, o.warmup_steps, o.b1, o.b2, o.eps, o.weight_decay, o.grad_clip_norm) == (
      6e-4, 24_000, 0.9, 0.98, 1e-6, 0.01, 0.0)
  assert c.mlm.sentence_objective == "none"


# Smoke variants that another test module trains as they are: running them again here only costs time.
TRAINED_ELSEWHERE = {"demo.py": "test_main.py", "sst2_finetune.py": "test_finetune.py",
                     "conll03_ner.py": "test_finetune.py", "ablation_ln.py": "test_sweep.py, every point of its sweep"}


def _smoke_json(path):
  return config_lib.to_json(_load(path).get_config("smoke"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_smoke_variant_trains(path, tmp_path):
  """Every experiment's `smoke` variant runs end to end (data, vocab, model, steps, eval, checkpoint),
  here or in the module that trains it; identical smoke configs (BERT-large's is BERT-base's) run once."""
  name = os.path.basename(path)
  if name in TRAINED_ELSEWHERE:
    pytest.skip(f"trained by {TRAINED_ELSEWHERE[name]}")
  same = [os.path.basename(p) for p in EXPERIMENTS if p < path or os.path.basename(p) in TRAINED_ELSEWHERE]
  twin = next((other for other in same if _smoke_json(os.path.join(ROOT, "experiments", other)) == _smoke_json(path)),
              None)
  if twin:
    pytest.skip(f"same smoke config as {twin}")
  from flaxlm.train import loop
  config = _load(path).get_config("smoke")
  data_files = [config.data.train_file] if config.data.train_file else list(config.data.files)
  if any(not (os.path.isfile(f) or glob.glob(f + ".*")) for f in data_files):  # Translation names a prefix.
    pytest.skip(f"shared data not found: {data_files}")
  config.train.progress_bar = False
  final = loop.run(config, str(tmp_path))
  assert final and all(np.isfinite(v) for v in final.values()), final
  if config.mlm.sentence_objective != "none":
    assert 0 <= final["sentence_accuracy"] <= 1 and final["sentence_loss"] > 0
