"""BERT-large pretraining, the published recipe (Devlin et al. 2019, "BERT", section A.2): masked-LM
plus next-sentence prediction.

24 layers, hidden 1024, 16 heads, feed-forward 4096; otherwise exactly the BERT-base recipe
(see experiments/bert_base_mlm.py): batch 256, lr 1e-4, 10k warmup, 1M steps, seq 128 for 90%
of the steps then 512, next-sentence prediction on `[CLS] A [SEP] B [SEP]` pairs.

  python -m flaxlm.main --config experiments/bert_large_mlm.py:phase=1 --workdir gs://BUCKET/bert_large \\
      --config.tokenizer.vocab_file=/path/to/uncased_L-24_H-1024_A-16/vocab.txt
  python -m flaxlm.main --config experiments/bert_large_mlm.py:phase=2 --workdir gs://BUCKET/bert_large \\
      --config.tokenizer.vocab_file=/path/to/uncased_L-24_H-1024_A-16/vocab.txt
  python -m flaxlm.main --config experiments/bert_large_mlm.py:smoke --workdir /tmp/bert_large_smoke  # CPU, ~1 min
"""

from flaxlm import config as config_lib
from flaxlm import recipes


def get_config(arg=None):
  """BERT-large pretraining; `phase=1|2` (default 1), `smoke` for a CPU minute."""
  return recipes.bert_pretraining("large", config_lib.parse_config_args(arg), "experiments/bert_large_mlm.py")
