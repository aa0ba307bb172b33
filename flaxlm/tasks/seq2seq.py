"""Encoder-decoder objectives: translation, T5 span corruption and BART text infilling.

Every objective makes (encoder ids, decoder ids, targets) examples: the decoder reads `bos y1 .. yn`
and predicts `y1 .. yn eos` (teacher forcing), optionally with label smoothing. Training packs several
examples per row, with the same segment id on the encoder and decoder side so cross-attention stays
within a pair. Translation evaluation puts one source per row, decodes it inside the jitted eval step
(greedy or beam, config.generate) and scores the detokenized outputs with sacreBLEU against the raw
reference lines.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm.data import pipeline, sources
from flaxlm.data.tokenizer import Tokenizer
from flaxlm.models import EncoderDecoderLM, ModelConfig
from flaxlm.models.decoder import encoder_decoder_decoder
from flaxlm.tasks import base, noising
from flaxlm.train import flops

OBJECTIVES = ("translation", "span_corruption", "text_infilling")
SIDES = {"encoder": "encoder_ids", "decoder": "decoder_ids"}


def span_corruption_chunk_tokens(max_source: int, max_target: int, noise_density: float,
                                 mean_span_length: float) -> int:
  """The longest chunk whose T5 inputs (kept tokens + one sentinel per span + eos) and targets
  (sentinel per span + noise + eos) fit max_source and max_target tokens."""
  best = 0
  for n in range(2, 4 * max(max_source, max_target)):
    noise = min(max(int(round(n * noise_density)), 1), n - 1)
    spans = max(int(round(noise / mean_span_length)), 1)
    if n - noise + spans + 1 <= max_source and noise + spans + 1 <= max_target:
      best = n
  return best


class Seq2SeqTask(base.Task):
  """Teacher-forced encoder-decoder training; translation eval adds sacreBLEU."""

  name = "seq2seq"

  def __init__(self, config, tokenizer: Tokenizer):
    self.config = config
    self.tokenizer = tokenizer
    self.objective = config.seq2seq.objective
    tokenizer.require(("sep",), f"seq2seq.objective={self.objective} (eos)")
    self.model_config = ModelConfig.from_config(config.model, tokenizer.vocab_size)
    base.check_vocab_fits(self.model_config, tokenizer)
    self.model = EncoderDecoderLM(self.model_config)
    self.seq_len = config.data.max_seq_len
    self.target_len = config.seq2seq.max_target_len
    self.lengths = {"encoder_ids": self.seq_len, "decoder_ids": self.target_len, "targets": self.target_len}
    start = config.seq2seq.decoder_start_token
    if start and start not in tokenizer.vocab:
      raise ValueError(f"config.seq2seq.decoder_start_token: {start!r} is not in {tokenizer.vocab_file}")
    self.decoder_start_id = tokenizer.vocab.index(start) if start else tokenizer.bos_id
    if self.decoder_start_id is None:
      raise ValueError(f"config.seq2seq.decoder_start_token is empty and {tokenizer.vocab_file} has no bos token "
                       "(<s>) to start the decoder from: name one (T5 starts from <pad>)")
    self.translation = self.objective == "translation"
    self.best_metric = ("bleu", "max") if self.translation and config.seq2seq.eval_bleu else ("nll", "min")
    self._pairs: dict[str, list[tuple[str, str]]] = {}

  @classmethod
  def validate_config(cls, config, need) -> None:
    s = config.seq2seq
    need(s.objective in OBJECTIVES, "seq2seq.objective", f"{s.objective!r} is not one of {OBJECTIVES}")
    if s.objective == "translation":
      need(bool(config.data.train_file and config.data.eval_file), "data.train_file",
           "translation reads data.train_file and data.eval_file as prefixes of PREFIX.<source_lang> and "
           "PREFIX.<target_lang> (e.g. ../shared/data/multi30k/train)")
      need(s.source_lang != s.target_lang, "seq2seq.target_lang", f"equals source_lang {s.source_lang!r}")
    need(s.max_target_len >= 4, "seq2seq.max_target_len", f"must be at least 4, got {s.max_target_len}")
    need(s.max_target_len <= config.model.max_position_embeddings or config.model.position_embedding != "learned",
         "seq2seq.max_target_len", f"{s.max_target_len} exceeds model.max_position_embeddings "
         f"{config.model.max_position_embeddings}")
    need(0.0 <= s.label_smoothing < 1.0, "seq2seq.label_smoothing", f"must be in [0, 1), got {s.label_smoothing}")
    need(0.0 < s.noise_density < 1.0, "seq2seq.noise_density", f"must be in (0, 1), got {s.noise_density}")
    need(s.mean_span_length >= 1.0, "seq2seq.mean_span_length", f"must be >= 1, got {s.mean_span_length}")
    need(0.0 < s.mask_ratio < 1.0, "seq2seq.mask_ratio", f"must be in (0, 1), got {s.mask_ratio}")
    need(s.poisson_lambda > 0.0, "seq2seq.poisson_lambda", f"must be positive, got {s.poisson_lambda}")
    need(s.eval_max_examples >= 0, "seq2seq.eval_max_examples", f"must be >= 0, got {s.eval_max_examples}")

  # ---------------------------------------------------------------- vocab

  @classmethod
  def vocab_texts(cls, config):
    """Translation: both sides of the training pairs; pretraining: the training documents."""
    if config.seq2seq.objective == "translation":
      pairs = sources.read_parallel(config.data.train_file, config.seq2seq.source_lang, config.seq2seq.target_lang)
      return (text for pair in pairs for text in pair)
    return base.document_vocab_texts(config)

  @classmethod
  def vocab_corpus_id(cls, config) -> str:
    """Identifies vocab_texts for the vocab cache."""
    s = config.seq2seq
    if s.objective == "translation":
      files = [f"{config.data.train_file}.{lang}" for lang in (s.source_lang, s.target_lang)]
      return "|".join([cls.name, *(f"{os.path.abspath(f)}:{os.path.getsize(f)}:{os.path.getmtime(f)}"
                                   for f in files if os.path.isfile(f))])
    return base.document_corpus_id(config)

  # ---------------------------------------------------------------- data

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    """A batch of the right shapes and dtypes, for initialisation and compilation."""
    batch = {}
    for side, length in (("encoder", self.seq_len), ("decoder", self.target_len)):
      for suffix in ("ids", "segment_ids", "positions"):
        batch[f"{side}_{suffix}"] = np.zeros((batch_size, length), np.int32)
    batch["targets"] = np.zeros((batch_size, self.target_len), np.int32)
    batch["example_index"] = np.full((batch_size,), -1, np.int32)
    return batch

  def pairs(self, which: str) -> list[tuple[str, str]]:
    """Translation pairs of 'train' or 'eval' (read once)."""
    if which not in self._pairs:
      prefix = self.config.data.train_file if which == "train" else self.config.data.eval_file
      self._pairs[which] = sources.read_parallel(prefix, self.config.seq2seq.source_lang,
                                                 self.config.seq2seq.target_lang)
    return self._pairs[which]

  def encode_pair(self, source: str, target: str) -> dict[str, np.ndarray]:
    """source eos -> bos target (teacher forcing) -> target eos, each cut to its row length."""
    src = [*self.tokenizer.encode(source)[: self.seq_len - 1], self.tokenizer.eos_id]
    tgt = self.tokenizer.encode(target)[: self.target_len - 1]
    return {"encoder_ids": np.array(src, np.int32), "decoder_ids": np.array([self.decoder_start_id, *tgt], np.int32),
            "targets": np.array([*tgt, self.tokenizer.eos_id], np.int32)}

  def _noised(self, ids: np.ndarray, rng) -> dict[str, np.ndarray] | None:
    """A document chunk (bos ... eos) -> a denoising example for the configured objective."""
    s, tok = self.config.seq2seq, self.tokenizer
    tokens = [int(t) for t in ids if t not in (tok.bos_id, tok.eos_id)]
    if len(tokens) < 2:
      return None  # Nothing to corrupt and keep: a document's last token alone.
    if self.objective == "span_corruption":
      inputs, targets = noising.span_corruption(tokens, rng, noise_density=s.noise_density,
                                                mean_span_length=s.mean_span_length,
                                                sentinel_ids=tok.sentinel_ids, eos_id=tok.eos_id)
      inputs, targets = list(inputs)[: self.seq_len], list(targets)[: self.target_len]
    else:
      noisy = list(noising.text_infilling(tokens, rng, mask_id=tok.mask_id, mask_ratio=s.mask_ratio,
                                          poisson_lambda=s.poisson_lambda))
      bos = [] if tok.bos_id is None else [tok.bos_id]
      inputs = [*bos, *noisy[: self.seq_len - 1 - len(bos)], tok.eos_id]
      targets = [*tokens[: self.target_len - 1], tok.eos_id]
    return {"encoder_ids": np.array(inputs, np.int32),
            "decoder_ids": np.array([self.decoder_start_id, *targets[:-1]], np.int32),
            "targets": np.array(targets, np.int32)}

  def _chunk_tokens(self) -> int:
    s = self.config.seq2seq
    if self.objective == "span_corruption":
      return span_corruption_chunk_tokens(self.seq_len, self.target_len, s.noise_density, s.mean_span_length) + 2
    return min(self.seq_len - 2, self.target_len - 1) + 2

  def _check_noising_tokens(self) -> None:
    """The pretraining objectives' special tokens (checked when their data is built, so a model directory
    whose tokenizer lacks them still loads for generation)."""
    tok = self.tokenizer
    if self.objective == "text_infilling":
      tok.require(("mask",), "seq2seq.objective=text_infilling")
    if self.objective == "span_corruption" and not tok.sentinel_ids:
      raise ValueError(f"seq2seq.objective=span_corruption needs sentinel tokens <extra_id_0>, ... in "
                       f"{tok.vocab_file} (train one with tokenizer.num_sentinels > 0)")

  def _document_batches(self, split: str, batch_size: int, process_index: int, process_count: int, train: bool):
    self._check_noising_tokens()
    seed = self.config.seed if train else self.config.seed + 1
    permute = noising.permute_sentences if self.config.seq2seq.permute_sentences else None
    chunks = pipeline.DocumentToChunks(self.tokenizer, self._chunk_tokens(), self._noised, seed, process_index,
                                       permute_lines=permute)
    return pipeline.document_batches(
        sources.text_source(self.config.data, split), chunks, self.lengths, _as_features, batch_size=batch_size,
        seed=self.config.seed, packing_bins=self.config.data.packing_bins, train=train,
        process_index=process_index, process_count=process_count)

  def train_batches(self, batch_size: int, process_index: int, process_count: int):
    """This process's endless, checkpointable stream of packed examples."""
    if not self.translation:
      return self._document_batches(self.config.data.train_split, batch_size, process_index, process_count, True)
    examples = [self.encode_pair(s, t) for s, t in self.pairs("train")]
    return pipeline.packed_example_batches(
        examples, self.lengths, _as_features, batch_size=batch_size, seed=self.config.seed,
        packing_bins=self.config.data.packing_bins, train=True, process_index=process_index,
        process_count=process_count)

  def eval_sets(self, batch_size: int, process_index: int, process_count: int):
    """Pretraining: the eval split, packed. Translation: one pair per row, in order, for decoding."""
    if not self.translation:
      return {"": self._document_batches(self.config.data.eval_split, batch_size, process_index, process_count,
                                         False)}
    return {"": self._translation_eval_batches(batch_size, process_index, process_count)}

  def eval_pairs(self) -> list[tuple[str, str]]:
    """The evaluated translation pairs (the first seq2seq.eval_max_examples, or all)."""
    return self.pairs("eval")[: self.config.seq2seq.eval_max_examples or None]

  def _translation_eval_batches(self, batch_size: int, process_index: int, process_count: int):
    indices = list(range(len(self.eval_pairs())))[process_index::process_count]
    for start in range(0, len(indices), batch_size):
      batch = self.dummy_batch(batch_size)
      for row, index in enumerate(indices[start:start + batch_size]):
        example = self.encode_pair(*self.eval_pairs()[index])
        for name, values in example.items():
          batch[name][row, : len(values)] = values
        for side in ("encoder", "decoder"):
          n = len(example[f"{side}_ids"])
          batch[f"{side}_segment_ids"][row, :n] = 1
          batch[f"{side}_positions"][row, :n] = np.arange(n)
        batch["example_index"][row] = index
      yield batch

  # ---------------------------------------------------------------- model

  def model_inputs(self, batch) -> tuple:
    """Encoder ids, segments, positions, then the decoder's."""
    return tuple(batch[f"{side}_{suffix}"] for side in ("encoder", "decoder")
                 for suffix in ("ids", "segment_ids", "positions"))

  def loss(self, params, batch, rng, train: bool):
    """(summed loss, number of target tokens, metrics) for a batch of (packed) examples."""
    logits_BLV = self.model.apply({"params": params}, *self.model_inputs(batch), deterministic=not train,
                                  rngs={"dropout": rng})
    weights_BL = (batch["decoder_segment_ids"] > 0).astype(jnp.float32)
    metrics = base.token_cross_entropy(logits_BLV, batch["targets"], weights_BL,
                                       self.config.seq2seq.label_smoothing)
    return metrics["loss"][0], metrics["loss"][1], metrics

  def eval_step(self, params, batch, rng):
    """Teacher-forced metrics; for translation with eval_bleu also each row's decoded tokens."""
    _, _, metrics = self.loss(params, batch, rng, train=False)
    if not (self.translation and self.config.seq2seq.eval_bleu):
      return metrics, {}
    return metrics, {"tokens": self._decode(params, batch["encoder_ids"], batch["encoder_segment_ids"],
                                            self.config.generate, rng)}

  def _decode(self, params, encoder_ids_BS, encoder_segment_ids_BS, gen, rng):
    """Output tokens [B, 1 + max_new_tokens] (decoder start first) for each source row."""
    max_length = 1 + gen.max_new_tokens
    if self.model_config.position_embedding == "learned" and max_length > self.model_config.max_position_embeddings:
      raise ValueError(f"generate.max_new_tokens={gen.max_new_tokens} (+ the start token) exceeds "
                       f"model.max_position_embeddings {self.model_config.max_position_embeddings}")
    cache, step_fn = encoder_decoder_decoder(self.model, params, encoder_ids_BS, encoder_segment_ids_BS, max_length)
    rows = encoder_ids_BS.shape[0]
    prompt_B1 = jnp.full((rows, 1), self.decoder_start_id, jnp.int32)
    return base.decode(gen, step_fn, cache, prompt_B1, jnp.ones((rows,), jnp.int32), max_length,
                       self.tokenizer.eos_id, self.tokenizer.pad_id, rng)

  def detokenize(self, tokens) -> str:
    """Text of one decoded row: after the decoder start token, up to eos."""
    ids = [int(t) for t in tokens[1:]]
    if self.tokenizer.eos_id in ids:
      ids = ids[: ids.index(self.tokenizer.eos_id)]
    return self.tokenizer.decode(ids)

  def eval_collector(self, name: str):
    """Translation with eval_bleu: collects hypotheses by example and scores them with sacreBLEU."""
    if not (self.translation and self.config.seq2seq.eval_bleu):
      return base.SumsCollector(self.summarize)
    return BleuCollector(self)

  def summarize(self, totals: dict) -> dict[str, float]:
    """Host-side metric values, with perplexity."""
    return base.with_perplexity(base.ratios(totals))

  def tokens_per_row(self) -> int:
    """Source plus target positions."""
    return self.seq_len + self.target_len

  def train_flops_per_row(self) -> float:
    """Analytic training FLOPs per row (encoder, decoder with cross-attention, LM head; x3 for backward)."""
    return 3.0 * flops.encoder_decoder_forward_flops_per_row(self.model_config, self.seq_len, self.target_len)

  # ---------------------------------------------------------------- generation

  def generate(self, params, texts: list[str], gen, seed: int = 0) -> list[str]:
    """Outputs for source `texts` (translations, or filled-in text) with the search `gen` describes."""
    encoded = [[*self.tokenizer.encode(t)[: self.seq_len - 1], self.tokenizer.eos_id] for t in texts]
    ids_BS = np.zeros((len(texts), self.seq_len), np.int32)
    segments_BS = np.zeros_like(ids_BS)
    for b, ids in enumerate(encoded):
      ids_BS[b, : len(ids)] = ids
      segments_BS[b, : len(ids)] = 1
    decode = jax.jit(lambda p, i, s, r: self._decode(p, i, s, gen, r))
    tokens_BT = decode(params, ids_BS, segments_BS, jax.random.PRNGKey(seed))
    return [self.detokenize(row) for row in np.asarray(tokens_BT)]

  def predict(self, params, texts: list[str], pairs=None, top_k: int = 5) -> list[str]:
    """Printable `source -> output` lines with the run's generate settings."""
    del pairs, top_k
    return [f"{source}\n  -> {output}" for source, output in
            zip(texts, self.generate(params, texts, self.config.generate))]

  def after_training(self, params, log) -> None:
    """Prints outputs for config.generate.prompts (translation: else the first eval sources, with references)."""
    texts = list(self.config.generate.prompts)
    references = []
    if not texts and self.translation:
      texts, references = map(list, zip(*self.eval_pairs()[:5]))
    if not texts:
      return
    log(f"Outputs ({self.config.generate.method}):")
    for i, (source, output) in enumerate(zip(texts, self.generate(params, texts, self.config.generate))):
      log(f"  source:    {source}")
      log(f"  output:    {output}")
      if references:
        log(f"  reference: {references[i]}")


class BleuCollector:
  """Eval outputs -> hypotheses by example index; result adds corpus sacreBLEU over them."""

  def __init__(self, task: Seq2SeqTask):
    self._task = task
    self._hypotheses: dict[int, str] = {}

  def add(self, batch, outputs) -> None:
    """Detokenizes each real row's decoded tokens."""
    # Padding rows have index -1, and the all-zero filler rows of multi-host lockstep have no source tokens.
    real = np.asarray(batch["encoder_segment_ids"]).max(axis=1) > 0
    for index, tokens, is_real in zip(np.asarray(batch["example_index"]), np.asarray(outputs["tokens"]), real):
      if index >= 0 and is_real:
        self._hypotheses[int(index)] = self._task.detokenize(tokens)

  def result(self, totals: dict) -> dict[str, float]:
    """Teacher-forced metrics plus `bleu` (sacreBLEU, 13a tokenization) and how many examples it covers."""
    import sacrebleu  # Late: only translation evaluation needs it.
    out = self._task.summarize(totals)
    order = sorted(self._hypotheses)
    pairs = self._task.eval_pairs()
    bleu = sacrebleu.corpus_bleu([self._hypotheses[i] for i in order], [[pairs[i][1] for i in order]])
    out["bleu"] = float(bleu.score)
    out["bleu_examples"] = float(len(order))
    return out


def _as_features(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """grain's packing outputs -> the task's batch features (targets share the decoder's segments)."""
  out = {"targets": row["targets"], "example_index": np.full((), -1, np.int32)}
  for side, name in SIDES.items():
    out[f"{side}_ids"] = row[name]
    out[f"{side}_segment_ids"] = row[f"{name}_segment_ids"].astype(np.int32)
    out[f"{side}_positions"] = row[f"{name}_positions"].astype(np.int32)
  return out

