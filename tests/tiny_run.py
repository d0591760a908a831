"""A whole train.py run in seconds: a tiny random BERT + tokenizer saved to a directory (``--model PATH``)
and two tiny user tasks (``--task-def YAML`` with TSV files), so tests go through the real command line."""

from __future__ import annotations

import random
from pathlib import Path

import torch

WORDS = "good great fine bad awful dull film plot actor scene the a is was very not and but".split()
POSITIVE, NEGATIVE = {"good", "great", "fine"}, {"bad", "awful", "dull"}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

TASK_YAML = """\
tasks:
  - name: tinysent
    head: classification
    labels: ["neg", "pos"]
    metrics: [accuracy, f1]
    files: {train: tinysent/train.tsv, dev: tinysent/dev.tsv}
    text_a: 0
    label: 1
    num_columns: 2
  - name: tinysim
    head: regression
    metrics: [pearson, spearman]
    files: {train: tinysim/train.tsv, dev: tinysim/dev.tsv}
    text_a: 0
    text_b: 1
    label: 2
    num_columns: 3
"""


def save_tiny_model(path: Path, dropout: float = 0.1, arch: str = "bert") -> Path:
    """A random 2-layer encoder (hidden 32, 4 heads, FFN 37; BERT unless ``arch`` names another family of
    :func:`tests.conftest.tiny_config`, or ``"ernie"``, a family the architecture table lacks) and its
    word-level tokenizer, via save_pretrained."""
    from transformers import AutoModel, BertConfig, BertModel, BertTokenizer, ErnieConfig
    from transformers.utils import logging as hf_logging

    from tests.conftest import tiny_config

    hf_logging.disable_progress_bar()  # "Writing model shards" bars on stderr (tests count stderr lines)

    path = Path(path)
    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    torch.manual_seed(0)
    if arch == "bert":
        config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=dropout,
                            attention_probs_dropout_prob=dropout)
        BertModel(config).save_pretrained(path)
    else:
        config = (ErnieConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=37, max_position_embeddings=64) if arch == "ernie"
                  else tiny_config(arch, dropout=dropout, vocab_size=len(vocab)))
        AutoModel.from_config(config, attn_implementation=config._attn_implementation).save_pretrained(path)
    BertTokenizer(vocab=vocab).save_pretrained(path)
    return path


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


def write_tiny_tasks(root: Path, n_train: int = 96, n_dev: int = 40, seed: int = 0) -> Path:
    """``root/tasks.yaml`` with tasks ``tinysent`` (pos/neg: more positive than negative words) and
    ``tinysim`` (regression: words shared by two sentences), TSV files with a header beside it."""
    root = Path(root)
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("dev", n_dev)):
        sent, sim = ["sentence\tlabel"], ["a\tb\tscore"]
        for _ in range(n):
            a, b = _sentence(rng), _sentence(rng)
            words = a.split()
            pos = sum(w in POSITIVE for w in words) > sum(w in NEGATIVE for w in words)
            sent.append(f"{a}\t{'pos' if pos else 'neg'}")
            sim.append(f"{a}\t{b}\t{len(set(words) & set(b.split())) / 2:.2f}")
        for task, lines in (("tinysent", sent), ("tinysim", sim)):
            (root / task).mkdir(parents=True, exist_ok=True)
            (root / task / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "tasks.yaml").write_text(TASK_YAML, encoding="utf-8")
    return root / "tasks.yaml"


def tiny_setup(root: Path, dropout: float = 0.1) -> list[str]:
    """Save the model and the tasks under ``root``; return the train.py options that use them
    (fp32, one thread, a private tokenization cache, no progress bars, no saved model)."""
    root = Path(root)
    model = save_tiny_model(root / "model", dropout=dropout)
    task_def = write_tiny_tasks(root / "data")
    return ["--model", str(model), "--task-def", str(task_def), "--tasks", "tinysent,tinysim",
            "--cache-dir", str(root / "cache"), "--no-progress", "--precision", "fp32", "--num-threads", "1",
            "--batch-size", "8", "--eval-batch-size", "16", "--max-seq-length", "32", "--no-save-model"]
