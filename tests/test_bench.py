"""The benchmark's arithmetic against hand-worked numbers, and tiny end-to-end runs of both benchmarks."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from flaxlm import bench
from flaxlm.models import ModelConfig

from conftest import SHARED_DATA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flops_per_token_of_bert_small_by_hand():
  cfg = ModelConfig(vocab_size=30522, **bench.SIZES["bert-small"])
  # Per layer and token: 8 * 256^2 (Q, K, V, output) + 4 * 256 * 1024 (feed-forward) + 4 * 128 * 256
  # (scores and weighted values over 128 keys) = 524288 + 1048576 + 131072 = 1703936; 4 layers: 6815744.
  # MLM head per position: 2 * 256^2 (transform) + 2 * 256 * 30522 (decoder) = 131072 + 15627264 = 15758336.
  # flaxlm runs the head at 20 of 128 positions: 3 * (6815744 + 15758336 * 20 / 128) = 3 * 9277984.
  assert bench.train_flops_per_token(cfg, 128, 20) == 27833952
  # The peers run it at every position: 3 * (6815744 + 15758336).
  assert bench.train_flops_per_token(cfg, 128, 128) == 67722240


def test_mfu_and_ratios_by_hand():
  # 10,000 tokens/s x 27,833,952 FLOPs a token = 278.3 GFLOP/s of a 1 TFLOP/s peak.
  assert bench.mfu(10_000, 27833952, 1e12) == pytest.approx(0.27833952)
  results = bench.add_ratios([
      {"case": "a", "framework": "flaxlm", "tokens_per_sec": 3000.0, "peak_memory_mb": 1000.0},
      {"case": "a", "framework": "hf_pytorch", "tokens_per_sec": 1000.0, "peak_memory_mb": 2000.0},
      {"case": "a", "framework": "hf_flax", "tokens_per_sec": 1500.0, "peak_memory_mb": 4000.0},
      {"case": "b", "framework": "flaxlm", "tokens_per_sec": 10.0, "peak_memory_mb": 1.0},
      {"case": "b", "framework": "hf_pytorch", "error": "exit status 1"},
  ])
  assert results[0]["tokens_per_sec_ratio"] == {"hf_pytorch": 3.0, "hf_flax": 2.0}
  assert results[0]["peak_memory_ratio"] == {"hf_pytorch": 0.5, "hf_flax": 0.25}
  assert "tokens_per_sec_ratio" not in results[3]  # A failed peer gives no ratio.


def test_host_masking_picks_15_percent_of_inner_tokens():
  ids = bench.synthetic_rows(0, 64, 128, 1000)
  assert (ids[:, 0] == bench.CLS_ID).all() and (ids[:, -1] == bench.SEP_ID).all()
  assert ids[:, 1:-1].min() >= len(bench.SPECIALS)
  inputs, labels = bench.host_masking(1, ids, 1000)
  chosen = labels >= 0
  assert (chosen.sum(axis=1) == 19).all()  # round(0.15 * 126 inner tokens)
  assert not chosen[:, 0].any() and not chosen[:, -1].any()
  np.testing.assert_array_equal(labels[chosen], ids[chosen])
  np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])
  masked_share = (inputs[chosen] == bench.MASK_ID).mean()
  assert 0.75 < masked_share < 0.85  # 80% of 1216 choices, within about 3 standard deviations.


def test_finetune_summary_weighs_intervals_by_time():
  records = [
      {"step": 10, "train/num_examples": 90.0},
      {"step": 20, "train/num_examples": 100.0, "perf/examples_per_sec": 50.0, "perf/step_time": 0.2,
       "perf/tokens_per_sec": 600.0},
      {"step": 30, "train/num_examples": 110.0, "perf/examples_per_sec": 100.0, "perf/step_time": 0.1,
       "perf/tokens_per_sec": 1500.0},
      {"step": 30, "eval/accuracy": 0.75, "eval/num_examples": 872.0},
  ]
  summary = bench.finetune_summary(records, num_steps=30)
  # Interval totals: 50 x 0.2 = 10 and 100 x 0.1 = 10 examples per step-second, over 0.3 s: 66.7 examples/s.
  assert summary["examples_per_sec"] == pytest.approx(20 / 0.3)
  assert summary["tokens_per_sec"] == pytest.approx((600 * 0.2 + 1500 * 0.1) / 0.3)  # 900 tokens/s
  assert summary["examples_per_step"] == pytest.approx(300 / 30)
  assert summary["dev_accuracy"] == 0.75 and summary["dev_examples"] == 872


def test_tiny_train_step_benchmark_with_peers_end_to_end():
  out = subprocess.run(
      [sys.executable, "-m", "flaxlm.bench", "--sizes", "tiny", "--seq-lens", "16", "--batch", "2",
       "--vocab-size", "128", "--steps", "2", "--warmup", "1", "--peers"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""})
  assert out.returncode == 0, out.stderr[-3000:]
  results = {r["framework"]: r for r in map(json.loads, out.stdout.strip().splitlines())}
  assert set(results) == set(bench.FRAMEWORKS)
  for r in results.values():
    assert r["case"] == "tiny/seq16/batch2" and r["tokens_per_sec"] > 0
    assert r["tokens_per_sec"] == pytest.approx(32 / r["step_time_s"])
    assert r["mfu"] == pytest.approx(r["tokens_per_sec"] * r["flops_per_token"] / r["peak_flops"])
    assert r["peak_memory_mb"] >= 0 and r["peak_rss_mb"] > r["baseline_rss_mb"] > 0
  assert results["flaxlm"]["head_positions_per_row"] == 3  # ceil(0.15 * 16)
  assert results["hf_pytorch"]["head_positions_per_row"] == 16
  ratios = results["flaxlm"]["tokens_per_sec_ratio"]
  assert ratios["hf_flax"] == pytest.approx(results["flaxlm"]["tokens_per_sec"] / results["hf_flax"]["tokens_per_sec"])


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason=f"shared data not found at {SHARED_DATA}")
def test_tiny_sst2_packing_benchmark_end_to_end():
  args = argparse.Namespace(sst2_dir=os.path.join(SHARED_DATA, "sst2"), finetune_size="tiny", init_from="",
                            finetune_rows=8, finetune_steps=4, finetune_train_examples=300)
  packed, padded = bench.finetune_benchmark(args)
  assert packed["rows"] == "packed" and padded["rows"] == "padded"
  assert packed["dev_examples"] == padded["dev_examples"] == 872  # The whole dev set, both ways.
  # SST-2 sentences average ~13 word pieces: several share each packed row, one fills a padded row.
  assert packed["examples_per_step"] > 3 * 8
  assert padded["batch_rows"] % 8 == 0 and padded["examples_per_step"] == padded["batch_rows"]
  assert packed["examples_per_sec_ratio"] == pytest.approx(packed["examples_per_sec"] / padded["examples_per_sec"])
