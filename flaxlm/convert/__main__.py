"""Command line: `python -m flaxlm.convert --from-hf DIR --to OUT` or `--from-flaxlm W --to-hf OUT`."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m flaxlm.convert",
      description="Convert between Hugging Face BERT/RoBERTa checkpoints and flaxlm model directories; import "
                  "GPT2LMHeadModel, T5ForConditionalGeneration and BartForConditionalGeneration checkpoints.")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--from-hf", metavar="DIR",
                      help="a Hugging Face checkpoint: config.json, model.safetensors or pytorch_model.bin, "
                           "vocab.txt or tokenizer.json (optional for GPT-2, T5 and BART)")
  source.add_argument("--from-flaxlm", metavar="W", help="a flaxlm training workdir or model directory")
  parser.add_argument("--to", "--out", dest="to", metavar="OUT", help="with --from-hf: the flaxlm model directory to create")
  parser.add_argument("--to-hf", metavar="OUT", help="with --from-flaxlm: the Hugging Face directory to create")
  parser.add_argument("--architecture", metavar="CLASS",
                      help="with --from-hf: the class to read the checkpoint as, instead of config.json's "
                           "architectures (e.g. BertModel keeps only the encoder and pooler)")
  parser.add_argument("--model-type", choices=("bert", "roberta"), default="bert",
                      help="with --from-flaxlm: write Bert* (default) or Roberta* classes")
  return parser


def main(argv: list[str] | None = None) -> int:
  """Runs one conversion; errors print as one line naming the bad input."""
  parser = _parser()
  args = parser.parse_args(argv)
  if args.from_hf and not args.to:
    parser.error("--from-hf needs --to OUT")
  if args.from_flaxlm and not args.to_hf:
    parser.error("--from-flaxlm needs --to-hf OUT")
  from absl import logging as absl_logging

  from flaxlm.convert.mapping import ConversionError
  from flaxlm.convert.model_dirs import export_to_hf, import_from_hf
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's informational lines would bury the summary.
  try:
    if args.from_hf:
      done = import_from_hf(args.from_hf, args.to, architecture=args.architecture)
      where = f"{args.from_hf} -> {args.to}"
    else:
      done = export_to_hf(args.from_flaxlm, args.to_hf, model_type=args.model_type)
      where = f"{args.from_flaxlm} -> {args.to_hf}"
  except (ConversionError, FileNotFoundError, ValueError) as e:
    print(f"flaxlm.convert: {e}", file=sys.stderr)
    return 1
  c = done.model_config
  print(f"flaxlm.convert: {done.architecture} (task {done.task}), {c.num_layers} layers, hidden {c.hidden_size}, "
        f"{c.num_heads} heads, vocab {c.vocab_size}, {done.num_params / 1e6:.2f}M params: {where}")
  if done.dropped:
    print(f"  left out (no place in the flaxlm model): {', '.join(done.dropped)}")
  for note in done.notes:
    print(f"  note: {note}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
