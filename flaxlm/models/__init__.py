"""Pure Flax (linen) modules: layers, the BERT encoder, task heads, and the generative (decoder) models."""

from flaxlm.models.decoder import (CausalLM, Decoder, EncoderDecoderLM, causal_lm_decoder, encoder_decoder_decoder,
                                   segment_positions)
from flaxlm.models.encoder import BertEncoder
from flaxlm.models.heads import (BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification,
                                  BertForTokenClassification, MlmTransform, Pooler, gather_positions, lm_logits)
from flaxlm.models.layers import (ModelConfig, attention_mask, causal_mask, cross_attention_mask,
                                  dot_product_attention)
