"""Next-sentence and sentence-order prediction: the pairs the pipeline builds, their exact resume, the
head and the loss; and the untied MLM decoder. (A whole NSP run: the ablation_sentence smoke
variant in test_experiments.py.)"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm.data import pipeline, sources
from flaxlm.data.pipeline import DOES_NOT_FOLLOW, FOLLOWS
from flaxlm.models import BertForMaskedLM, ModelConfig

from test_loop import _config
from test_models import np_encoder, np_mlm_logits


@pytest.fixture(scope="module")
def docs(tiny_config):
  source = sources.text_source(tiny_config.data, "train")
  return [source[i] for i in range(len(source))]


def _tokens(tokenizer, document):
  return [t for line in document.split("\n") if line.strip() for t in tokenizer.encode(line)]


def _split_pair(pair, tokenizer):
  """(A, B, label) of one `[CLS] A [SEP] B [SEP]` sequence, checking its layout on the way."""
  ids, types, labels = pair["input_ids"].tolist(), pair["token_type_ids"], pair["sentence_labels"]
  assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id and ids.count(tokenizer.sep_id) == 2
  middle = ids.index(tokenizer.sep_id)
  np.testing.assert_array_equal(types, [0] * (middle + 1) + [1] * (len(ids) - middle - 1))
  assert labels[0] in (FOLLOWS, DOES_NOT_FOLLOW) and not labels[1:].any()
  np.testing.assert_array_equal(pair["word_start"], tokenizer.word_starts(pair["input_ids"]))
  a, b = ids[1:middle], ids[middle + 1:-1]
  assert a and b
  return a, b, int(labels[0])


def _is_subsequence(short, long):
  rest = iter(long)
  return all(token in rest for token in short)


def _words(tokens):
  """Token ids as one string, so `in` finds a run of them."""
  return " " + " ".join(map(str, tokens)) + " "


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_pairs_are_the_document_in_order_with_half_of_them_changed(objective, docs, tiny_tokenizer):
  L = 64
  cut = pipeline.DocumentToSentencePairs(tiny_tokenizer, L, objective, docs, seed=7)
  streams = [_tokens(tiny_tokenizer, d) for d in docs]
  texts = [" ".join(map(str, s)) for s in streams]
  labels = []
  for position, doc_index in enumerate(range(0, len(docs), 2)):
    pairs = cut.flat_map((position, doc_index, docs[doc_index]))
    own = []  # The document's own tokens as the pairs use them, in document order.
    for pair in pairs:
      assert len(pair["input_ids"]) <= L
      a, b, label = _split_pair(pair, tiny_tokenizer)
      labels.append(label)
      if label == FOLLOWS:
        own += a + b
      elif objective == "sop":
        own += b + a  # Swapped: B is the text that came first.
      else:
        own += a  # A random B from other documents; the real B starts the next pair.
        # From a random other document on, through the following ones (wrapping, skipping this one).
        others = " ".join(t for t in texts[doc_index + 1:] + texts[:doc_index] if t)
        assert _words(b) in f" {others} {others} "
    # Nothing is repeated or reordered; only a few lone tokens (a chunk of one token has no A and
    # B to split into) are dropped.
    stream = streams[doc_index]
    assert _is_subsequence(own, stream) and len(stream) - len(own) <= max(3, len(stream) // 200), (
        len(stream), len(own))
  share = labels.count(DOES_NOT_FOLLOW) / len(labels)
  assert len(labels) > 300 and 0.43 < share < 0.57, (len(labels), share)  # 50/50 within ~3 sigma.


def test_pairs_depend_only_on_seed_and_stream_position(docs, tiny_tokenizer):
  longest = max(range(len(docs)), key=lambda i: len(docs[i]))

  def pairs(seed, position):
    cut = pipeline.DocumentToSentencePairs(tiny_tokenizer, 64, "nsp", docs, seed=seed)
    return [p["input_ids"].tolist() + p["sentence_labels"].tolist()
            for p in cut.flat_map((position, longest, docs[longest]))]

  assert pairs(0, 5) == pairs(0, 5)
  assert pairs(0, 5) != pairs(1, 5) and pairs(0, 5) != pairs(0, 6)
  with pytest.raises(ValueError, match="another document"):
    pipeline.DocumentToSentencePairs(tiny_tokenizer, 64, "nsp", docs[:1], seed=0)


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_pair_stream_resumes_exactly_and_labels_sit_at_cls(objective, docs, tiny_tokenizer):
  def make():
    return pipeline.train_batches(docs, tiny_tokenizer, max_seq_len=64, batch_size=8, seed=3, packing_bins=8,
                                  sentence_objective=objective)

  it = make()
  for _ in range(5):
    batch = next(it)
  assert set(batch) == set(pipeline.features(objective))
  starts = (batch["positions"] == 0) & (batch["segment_ids"] > 0)
  np.testing.assert_array_equal(batch["sentence_labels"] > 0, starts)  # One label per packed pair, at its [CLS].
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  resumed = make()
  resumed.set_state(state)
  jax.tree.map(np.testing.assert_array_equal, [next(resumed) for _ in expected], expected)


def _params(model, B=2, L=12, P=3):
  z = jnp.zeros((B, L), jnp.int32)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), z, z + 1, z, z, jnp.zeros((B, P), jnp.int32)))
  # Random (not zero) biases and LayerNorm gains so every term of the formula is exercised.
  leaves, tree = jax.tree.flatten(params["params"])
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_heads_keep_the_default_params_and_add_bert_names():
  cfg = ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=24, max_position_embeddings=32)
  z = jnp.zeros((2, 12), jnp.int32)
  shapes = lambda model: jax.tree.map(lambda x: x.shape, nn.meta.unbox(jax.eval_shape(
      model.init, jax.random.PRNGKey(0), z, z + 1, z, z, jnp.zeros((2, 3), jnp.int32))["params"]))
  default = shapes(BertForMaskedLM(cfg))
  assert set(default) == {"encoder", "mlm_transform", "mlm_bias"}
  with_head = shapes(BertForMaskedLM(cfg, sentence_head=True))
  assert with_head["pooler"] == {"dense": {"kernel": (16, 16), "bias": (16,)}}
  assert with_head["seq_relationship"] == {"kernel": (16, 2), "bias": (2,)}
  assert {k: v for k, v in with_head.items() if k not in ("pooler", "seq_relationship")} == default
  untied = shapes(BertForMaskedLM(dataclasses.replace(cfg, tie_embeddings=False)))
  assert untied["mlm_decoder"] == {"kernel": (16, 50)} and set(untied) == set(default) | {"mlm_decoder"}


def test_sentence_head_and_untied_decoder_match_numpy():
  cfg = ModelConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=4, mlp_dim=24, max_position_embeddings=32,
                    dropout_rate=0.0, attention_dropout_rate=0.0, tie_embeddings=False)
  model = BertForMaskedLM(cfg, sentence_head=True)
  params = _params(model)
  ids = np.random.default_rng(1).integers(5, 50, size=(1, 12)).astype(np.int32)
  masked = np.array([[0, 4, 11]], np.int32)
  mlm_logits, sentence_logits = jax.jit(model.apply)({"params": params}, ids, np.ones_like(ids),
                                                     np.arange(12, dtype=np.int32)[None], np.zeros_like(ids), masked)
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  hidden = np_encoder(ids[0], p["encoder"], cfg)
  pooled = np.tanh(hidden @ p["pooler"]["dense"]["kernel"] + p["pooler"]["dense"]["bias"])
  expected = pooled @ p["seq_relationship"]["kernel"] + p["seq_relationship"]["bias"]
  np.testing.assert_allclose(np.asarray(sentence_logits[0]), expected, rtol=2e-4, atol=2e-4)
  # The untied decoder: the tied formula with mlm_decoder's kernel in place of the word embeddings.
  swapped = {**p, "encoder": {**p["encoder"], "embeddings": {
      **p["encoder"]["embeddings"], "word": {"embedding": p["mlm_decoder"]["kernel"].T}}}}
  np.testing.assert_allclose(np.asarray(mlm_logits[0]), np_mlm_logits(hidden[masked[0]], swapped, cfg),
                             rtol=2e-4, atol=2e-4)


def test_loss_is_mlm_mean_plus_sentence_mean(tiny_config, tiny_tokenizer, docs):
  from flaxlm.tasks.mlm import MlmTask
  task = MlmTask(_config(tiny_config, mlm__sentence_objective="sop"), tiny_tokenizer)
  batch = jax.tree.map(jnp.asarray, next(pipeline.train_batches(
      docs, tiny_tokenizer, max_seq_len=64, batch_size=4, seed=0, packing_bins=4, sentence_objective="sop")))
  params = nn.meta.unbox(jax.jit(task.init_params)(jax.random.PRNGKey(0), task.dummy_batch(1)))
  prepared = jax.jit(task.prepare_batch)(batch, jax.random.PRNGKey(1))
  loss_sum, weight, metrics = jax.jit(task.loss, static_argnames="train")(params, prepared, jax.random.PRNGKey(2),
                                                                           train=False)
  mlm_logits, sentence_logits = jax.jit(task.model.apply)({"params": params}, *task.model_inputs(prepared))

  def mean_nll(logits, targets, weights):
    logits = np.asarray(logits, np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, np.asarray(targets)[..., None], -1)[..., 0]
    return (nll * weights).sum() / weights.sum()

  labels = np.asarray(batch["sentence_labels"])
  at_cls = (labels > 0).astype(np.float64)
  mlm = mean_nll(mlm_logits, prepared["targets"], np.asarray(prepared["weights"], np.float64))
  sentence = mean_nll(sentence_logits, np.maximum(labels - 1, 0), at_cls)
  assert float(loss_sum / weight) == pytest.approx(mlm + sentence, rel=1e-5)
  summary = task.summarize(jax.device_get(metrics))
  assert summary["mlm_loss"] == pytest.approx(mlm, rel=1e-5)
  assert summary["sentence_loss"] == pytest.approx(sentence, rel=1e-5)
  assert summary["loss"] == pytest.approx(mlm + sentence, rel=1e-5)
  correct = (np.argmax(np.asarray(sentence_logits), -1) == labels - 1) * at_cls
  assert summary["sentence_accuracy"] == pytest.approx(correct.sum() / at_cls.sum())
