"""Multi30k translation, German->English or English->German: a small Transformer encoder-decoder trained
from scratch on 2 CPU cores, evaluated with sacreBLEU on the validation set.

Multi30k (Elliott et al., 2016; WMT16 multimodal task 1): 29,000 image-caption pairs for training, 1,014
for validation. Published small Transformers reach about 35 BLEU De->En on the 2016 test set with more
compute; this recipe's target is 22 within 60 minutes of CPU training. The model: pre-LN blocks (they
train at a high learning rate without a long warmup), 3 encoder + 3 decoder layers, 256 wide, 4 heads,
learned positions, word embeddings shared by encoder, decoder and output layer, over an 8k byte-level BPE
trained on both languages (so the output detokenizes exactly). Label smoothing 0.1 (Vaswani et al., 2017),
AdamW with cosine decay, dropout 0.1, pairs packed into rows of 64 source / 64 target tokens. Evaluation
decodes the validation sources with beam search (4 beams) and scores against the raw references.

  python -m flaxlm.main --config experiments/multi30k_translate.py:direction=de-en --workdir runs/multi30k_de_en
  python -m flaxlm.generate --workdir runs/multi30k_de_en --source "Ein Mann fährt mit dem Fahrrad."
  python -m flaxlm.main --config experiments/multi30k_translate.py:direction=en-de --workdir runs/multi30k_en_de
  python -m flaxlm.main --config experiments/multi30k_translate.py:smoke --workdir /tmp/multi30k_smoke  # ~1 min
Data: data_dir=DIR with train.{de,en} and val.{de,en} (default ../shared/data/multi30k).
"""

import os

from flaxlm import config as config_lib
from flaxlm import recipes

_WHERE = "experiments/multi30k_translate.py"


def get_config(arg=None):
  """Multi30k translation; args: direction=de-en|en-de, data_dir=DIR, smoke."""
  args = config_lib.parse_config_args(arg)
  config_lib.check_config_args(args, {"direction", "data_dir", "smoke"}, _WHERE)
  direction = args.get("direction", "de-en")
  if direction not in ("de-en", "en-de"):
    raise config_lib.ConfigError(f"{_WHERE}: direction must be de-en or en-de, got {direction!r}")
  data_dir = args.get("data_dir") or os.path.join(recipes.SHARED_DATA, "multi30k")
  c = recipes.generative_base("bart", "seq2seq")
  c.model.update(pre_layer_norm=True, embedding_norm=False, hidden_size=256, num_layers=3, num_decoder_layers=3,
                 num_heads=4, mlp_dim=1024, max_position_embeddings=64, dropout_rate=0.1,
                 attention_dropout_rate=0.0)
  c.seq2seq.update(objective="translation", source_lang=direction[:2], target_lang=direction[3:],
                   max_target_len=64, label_smoothing=0.1)
  c.data.update(train_file=os.path.join(data_dir, "train"), eval_file=os.path.join(data_dir, "val"),
                max_seq_len=64, packing_bins=64)
  c.tokenizer.vocab_size = 8000
  c.generate.update(method="beam", num_beams=4, length_penalty=1.0, max_new_tokens=60)
  c.optimizer.update(learning_rate=1e-3, warmup_steps=300, decay="cosine")
  c.train.update(batch_size=32, num_steps=3000, log_every=50, eval_every=1000, checkpoint_every=500,
                 eval_batch_size=64, progress_bar=True)
  if "smoke" in args:
    c.model.update(hidden_size=64, num_layers=1, num_decoder_layers=1, num_heads=2, mlp_dim=128)
    c.tokenizer.vocab_size = 1000
    c.seq2seq.eval_max_examples = 32
    c.generate.update(num_beams=2, max_new_tokens=20)
    c.optimizer.update(learning_rate=2e-3, warmup_steps=10)
    c.train.update(batch_size=16, num_steps=60, log_every=20, eval_every=0, checkpoint_every=30,
                   eval_batch_size=32)
  return c
