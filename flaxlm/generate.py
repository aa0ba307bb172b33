"""Generate with a trained causal-LM or encoder-decoder run.

  python -m flaxlm.generate --workdir W --prompt "ROMEO:" [--prompt ...] [--prompts_file F]   # causal LM
  python -m flaxlm.generate --workdir W --source "Ein Mann fährt Fahrrad." [--sources_file F]  # encoder-decoder

Decoding defaults come from the run's `generate` config section; flags override them: --method
greedy|sample|beam, --max_new_tokens, --temperature, --top_k, --top_p, --num_beams, --length_penalty,
--seed. Everything is batched, jitted with a key-value cache and static shapes.
"""

from __future__ import annotations

import sys

from absl import app, flags
from absl import logging as absl_logging

_WORKDIR = flags.DEFINE_string("workdir", None, "A flaxlm causal_lm or seq2seq run directory.")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "Causal LM: text to continue; repeat for several.")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "Causal LM: a file with one prompt per line.")
_SOURCE = flags.DEFINE_multi_string("source", [], "Encoder-decoder: source text; repeat for several.")
_SOURCES_FILE = flags.DEFINE_string("sources_file", None, "Encoder-decoder: a file with one source per line.")
_METHOD = flags.DEFINE_enum("method", None, ["greedy", "sample", "beam"], "Search (default: the run's).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", None, "Tokens to generate at most.")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "sample: logits / temperature.")
_TOP_K = flags.DEFINE_integer("top_k", None, "sample: keep the k most likely tokens (0: all).")
_TOP_P = flags.DEFINE_float("top_p", None, "sample: keep the smallest set reaching this probability (1: all).")
_BEAMS = flags.DEFINE_integer("num_beams", None, "beam: beams per input.")
_LENGTH_PENALTY = flags.DEFINE_float("length_penalty", None, "beam: score = log-prob / length ** this.")
_SEED = flags.DEFINE_integer("seed", 0, "sample: random seed.")
flags.mark_flag_as_required("workdir")

_OVERRIDES = {"method": _METHOD, "max_new_tokens": _MAX_NEW, "temperature": _TEMPERATURE, "top_k": _TOP_K,
              "top_p": _TOP_P, "num_beams": _BEAMS, "length_penalty": _LENGTH_PENALTY}


def _lines(values: list[str], path: str | None) -> list[str]:
  out = list(values)
  if path:
    with open(path, encoding="utf-8") as f:
      out.extend(line.rstrip("\n") for line in f if line.strip())
  return out


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.ERROR)
  from flaxlm import config as config_lib
  from flaxlm.train.trained import load_trained

  prompts = _lines(_PROMPT.value, _PROMPTS_FILE.value)
  sources = _lines(_SOURCE.value, _SOURCES_FILE.value)
  try:
    config, task, params = load_trained(_WORKDIR.value)
    if task.name not in ("causal_lm", "seq2seq"):
      raise ValueError(f"{_WORKDIR.value} is a {task.name} run; flaxlm.generate needs causal_lm or seq2seq")
    texts, kind = (prompts, "--prompt") if task.name == "causal_lm" else (sources, "--source")
    other = sources if task.name == "causal_lm" else prompts
    if other:
      raise ValueError(f"a {task.name} run takes {kind}, not "
                       f"{'--source' if kind == '--prompt' else '--prompt'}")
    if not texts:
      raise ValueError(f"give {kind} (repeatable) or {kind}s_file")
    gen = config.generate
    gen.unlock()
    for key, flag in _OVERRIDES.items():
      if flag.value is not None:
        gen[key] = flag.value
    gen.lock()
    config_lib.validate(config)  # Names a bad override (generate.top_p=2, ...) before decoding.
    outputs = task.generate(params, texts, gen, seed=_SEED.value)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"flaxlm.generate: {e}")
  for text, output in zip(texts, outputs):
    if task.name == "causal_lm":
      print(text + output)
    else:
      print(f"{text}\n  -> {output}")
    print()


if __name__ == "__main__":
  app.run(main)
