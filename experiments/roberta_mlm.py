"""RoBERTa-base pretraining (Liu et al. 2019, "RoBERTa", section 4 and table 9): masked-LM only.

What RoBERTa changed from BERT, all here: no next-sentence prediction (rows are packed sequences,
not sentence pairs); dynamic masking (flaxlm draws new masks in every step anyway); a large batch
of 8,192 sequences of 512 tokens for 500k steps; Adam with b2 0.98 and eps 1e-6, peak lr 6e-4
after 24k warmup steps, linear decay, weight decay 0.01, no gradient clipping; dropout 0.1; one
token type. BERT-base's size (12 layers, hidden 768). RoBERTa trained on 160 GB of text with a
50k byte-level BPE vocab; here TFDS `wikipedia/20230601.en`, and a 50,265-token cased WordPiece
vocab is trained unless you give RoBERTa's own tokenizer.json. flaxlm packs several documents'
sequences into a row with attention kept inside each (RoBERTa's FULL-SENTENCES lets attention
cross documents). A batch of 8k x 512 needs accumulation on most hardware:
`--config.train.grad_accum_steps=N` keeps the update the same.

  python -m flaxlm.main --config experiments/roberta_mlm.py --workdir gs://BUCKET/roberta_base \\
      --config.tokenizer.vocab_file=/path/to/roberta-base/tokenizer.json
  python -m flaxlm.main --config experiments/roberta_mlm.py:smoke --workdir /tmp/roberta_smoke  # CPU, ~1 min
"""

from flaxlm import config as config_lib
from flaxlm import recipes


def get_config(arg=None):
  """RoBERTa-base pretraining; `smoke` for a CPU minute."""
  return recipes.roberta_pretraining(config_lib.parse_config_args(arg), "experiments/roberta_mlm.py")
