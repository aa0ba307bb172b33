"""BERT-base pretraining, the published recipe (Devlin et al. 2019, "BERT", section A.2): masked-LM
plus next-sentence prediction.

12 layers, hidden 768, 12 heads, feed-forward 3072, uncased WordPiece vocab of 30,522, post-LN,
GELU, dropout 0.1; Adam (b1 0.9, b2 0.999, weight decay 0.01), lr 1e-4 with 10k warmup steps and
linear decay over 1M steps at batch 256; 15% masking, 80/10/10; sequence length 128 for the first
90% of steps (20 predictions a row), then 512 for the last 10% (80 predictions). Rows hold
`[CLS] A [SEP] B [SEP]` pairs; half the time B is a random document's text and a pooled 2-way head
learns to tell (next-sentence prediction), its loss added to the MLM loss. RoBERTa later found NSP
unnecessary: experiments/roberta_mlm.py and experiments/ablation_sentence.py leave it out. The
original data was BooksCorpus + English Wikipedia, here TFDS `wikipedia/20230601.en`. Compute is
bfloat16 with float32 parameters.

Phase 1 (seq 128, steps 0-900k), then phase 2 (seq 512, steps 900k-1M) in the same workdir:

  python -m flaxlm.main --config experiments/bert_base_mlm.py:phase=1 --workdir gs://BUCKET/bert_base \\
      --config.tokenizer.vocab_file=/path/to/uncased_L-12_H-768_A-12/vocab.txt
  python -m flaxlm.main --config experiments/bert_base_mlm.py:phase=2 --workdir gs://BUCKET/bert_base \\
      --config.tokenizer.vocab_file=/path/to/uncased_L-12_H-768_A-12/vocab.txt

Without a vocab_file, a 30,522-token WordPiece vocab is trained on the first 200k documents.
The data needs TFDS_DATA_DIR holding `wikipedia/20230601.en` in array_record format.

  python -m flaxlm.main --config experiments/bert_base_mlm.py:smoke --workdir /tmp/bert_base_smoke  # CPU, ~1 min
"""

from flaxlm import config as config_lib
from flaxlm import recipes


def get_config(arg=None):
  """BERT-base pretraining; `phase=1|2` (default 1), `smoke` for a CPU minute."""
  return recipes.bert_pretraining("base", config_lib.parse_config_args(arg), "experiments/bert_base_mlm.py")
