"""Shared test set-up: 8 simulated CPU devices, private caches, a tiny corpus and tokenizer."""

import os
import tempfile

# Before JAX is imported anywhere: tests run on 8 simulated devices, as the design asks.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = tempfile.mkdtemp(prefix="flaxlm-test-cache-")
# The embedded corpus and trained vocabs are cached across test runs when the user's cache exists;
# TFDS datasets always go to a private dir so tests never touch a user's prepared data.
os.environ.setdefault("FLAXLM_CACHE_DIR", _CACHE)
os.environ["TFDS_DATA_DIR"] = os.path.join(_CACHE, "tfds")

import pytest  # noqa: E402

SHARED_DATA = os.environ.get("FLAXLM_SHARED_DATA") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
  """A small two-file corpus of real prose (Python docs paragraphs), documents separated by blank lines."""
  from flaxlm.data import sources
  path = sources.python_docs_corpus()
  with open(path, encoding="utf-8") as f:
    docs = f.read().split("\n\n")[:600]
  root = tmp_path_factory.mktemp("corpus")
  files = []
  for i, chunk in enumerate((docs[:300], docs[300:])):
    p = root / f"part{i}.txt"
    p.write_text("\n\n".join(d for d in chunk if d.strip()) + "\n", encoding="utf-8")
    files.append(str(p))
  return files


@pytest.fixture(scope="session")
def tiny_config(tiny_corpus):
  """A config for a 2-layer, 32-wide BERT on the tiny corpus that trains in seconds."""
  from flaxlm import config as config_lib
  c = config_lib.base_config()
  c.data.source = "text_files"
  c.data.files = tuple(tiny_corpus)
  c.data.max_seq_len = 64
  c.data.eval_fraction = 0.1
  c.data.packing_bins = 16
  c.tokenizer.vocab_size = 512
  c.model.hidden_size = 32
  c.model.num_layers = 2
  c.model.num_heads = 2
  c.model.mlp_dim = 64
  c.model.max_position_embeddings = 64
  c.optimizer.learning_rate = 3e-3
  c.optimizer.warmup_steps = 2
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  c.train.num_steps = 8
  c.train.log_every = 2
  c.train.eval_every = 0
  c.train.checkpoint_every = 4
  c.train.eval_max_batches = 2
  c.train.progress_bar = False
  c.train.peak_flops = 1e11
  return c


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_config):
  from flaxlm.data import build_tokenizer
  return build_tokenizer(tiny_config)
