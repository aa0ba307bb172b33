"""Config parsing and start-up validation: every error names the key at fault."""

import os
import subprocess
import sys

import pytest

from flaxlm import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_config_args():
  assert config_lib.parse_config_args(None) == {}
  assert config_lib.parse_config_args("smoke") == {"smoke": "true"}
  assert config_lib.parse_config_args("smoke, task=sst2,version=2.0") == {"smoke": "true", "task": "sst2",
                                                                           "version": "2.0"}
  with pytest.raises(config_lib.ConfigError, match=r"unknown config argument\(s\) \['smok'\]"):
    config_lib.check_config_args({"smok": "true"}, {"smoke"}, "experiments/demo.py")


def test_base_config_is_locked_against_typos():
  c = config_lib.base_config()
  with pytest.raises(AttributeError, match="batchsize"):
    c.train.batchsize = 3


@pytest.mark.parametrize("key,value,named", [
    ("model.num_heads", 3, "config.model.num_heads"),
    ("model.dtype", "float16", "config.model.dtype"),
    ("data.max_seq_len", 1024, "config.data.max_seq_len"),
    ("data.source", "wiki", "config.data.source"),
    ("mlm.mask_token_prob", 0.95, "config.mlm.random_token_prob"),
    ("train.grad_accum_steps", 5, "config.train.grad_accum_steps"),
    ("optimizer.name", "sgd", "config.optimizer.name"),
    ("tokenizer.vocab_file", "/no/such/vocab.txt", "config.tokenizer.vocab_file"),
    ("task.name", "nsp", "config.task.name"),
])
def test_impossible_values_fail_naming_the_key(key, value, named):
  c = config_lib.base_config()
  section, name = key.split(".")
  c[section][name] = value
  with pytest.raises(config_lib.ConfigError, match=named.replace(".", r"\.")):
    config_lib.validate(c)


def test_mesh_axes_must_fit():
  c = config_lib.base_config()
  c.mesh.data, c.mesh.fsdp = -1, -1
  with pytest.raises(config_lib.ConfigError, match="config.mesh"):
    config_lib.validate(c)


def test_config_json_round_trip():
  c = config_lib.base_config()
  c.model.hidden_size = 48
  c.task.fill_mask_examples = ("a [MASK] b",)
  back = config_lib.from_json(config_lib.to_json(c))
  assert back.model.hidden_size == 48 and back.task.fill_mask_examples == ("a [MASK] b",)
  assert back.mesh.rules == c.mesh.rules
  assert config_lib.to_json(back) == config_lib.to_json(c)


def _main(*args, workdir):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "flaxlm.main", *args, "--workdir", str(workdir)], cwd=ROOT,
                        capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("override,named", [
    ("--config.train.batchsize=8", "batchsize"),
    ("--config.train.batch_size=eight", "batch_size"),
    ("--config.model.num_heads=3", "config.model.num_heads"),
])
def test_command_line_errors_name_the_key_and_write_nothing(tmp_path, override, named):
  result = _main("--config", "experiments/demo.py:smoke", override, workdir=tmp_path / "w")
  assert result.returncode != 0
  assert named in result.stderr
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_unknown_experiment_argument_is_named(tmp_path):
  result = _main("--config", "experiments/demo.py:smok", workdir=tmp_path / "w")
  assert result.returncode != 0 and "smok" in result.stderr
