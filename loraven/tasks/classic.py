"""Classic tasks for the paper's §5.2/§5.3 experiments, all offline: an image, a text and a regression task.

* ``digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 images, 64 pixels, 10 classes) — the
  offline stand-in for the paper's CIFAR-10 image task (no dataset hub here).
* ``regression``: scikit-learn's bundled diabetes data (442 patients, 10 features). The target is
  standardised with the training split's mean/std, so MSE is in units of the target's variance
  (1.0 = predicting the mean); the paper's "<2 % MSE" change is then scale-free.
* ``text_cls``: a seeded synthetic sentiment task standing in for GLUE/SST-2. Sentences mix neutral filler
  with polar words; ``not`` flips the next polar word, so the label (sign of the summed polarity) needs
  word pairs, not just word counts. Features are hashed unigrams + bigrams (scikit-learn's
  ``HashingVectorizer``: stateless, so train and test need no shared vocabulary), fed to an MLP.

Features are standardised with the training split's statistics only; splits are seeded and disjoint.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from loraven.errors import ConfigError
from loraven.tasks.base import Task
from loraven.tasks.batching import EpochBatches, fit_batch_size
from loraven.tasks.splits import carve_indices, eval_split_of, split_fingerprint, validation_fraction_of

CLASSIC_KINDS = ("digits", "regression", "text_cls")


@dataclass
class ClassicTask(Task):
    """Tensors for the paper's §5.2/§5.3 classic experiments, scored directly (accuracy or MSE)."""

    name: str
    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    regression: bool
    info: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    kind: str = "classic"
    eval_split: str = "test"  # x_test/y_test hold the *evaluated* split: test, or validation (task.eval_split)
    family: str = "custom"
    train_unit: str = "sample"
    max_seq_len: int | None = None

    @property
    def metric(self) -> str:
        return "mse" if self.regression else "acc"

    @property
    def metric_key(self) -> str:
        return self.metric

    @property
    def higher_is_better(self) -> bool:
        return not self.regression

    def train_batches(
        self, tokenizer: Any, batch_size: int, max_len: int, seed: int, rank: int = 0, world: int = 1
    ) -> Iterator[dict[str, torch.Tensor]]:
        return classic_batches(self, batch_size, seed, rank, world)

    def batch_loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        out = model(batch["x"])
        if self.regression:
            return torch.nn.functional.mse_loss(out.squeeze(-1).float(), batch["y"].float())
        return torch.nn.functional.cross_entropy(out.float(), batch["y"])

    def batch_units(self, batch: Mapping[str, torch.Tensor]) -> int:
        return int(batch["x"].shape[0])

    def score(self, model: torch.nn.Module, tokenizer: Any, batch_size: int, seed: int) -> dict[str, Any]:
        return evaluate_classic(model, self)


def classic_batches(
    task: ClassicTask, batch_size: int, seed: int, rank: int = 0, world: int = 1
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless seeded shuffles of the training rows (each rank keeps its slice of the global batch); the
    position can be saved and restored (:class:`~loraven.tasks.batching.EpochBatches`)."""
    n = task.x_train.shape[0]
    if n == 0:
        raise ValueError(f"task {task.name} has no training examples")

    def make_batch(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        idx = idx[rank::world]
        return {"x": task.x_train[idx], "y": task.y_train[idx]}

    return EpochBatches(n, fit_batch_size(batch_size, n, world), seed, make_batch)


@torch.no_grad()
def evaluate_classic(model: torch.nn.Module, task: ClassicTask) -> dict[str, Any]:
    """Accuracy (with its binomial stderr and the majority-class chance level) or MSE on the evaluated split."""
    device = next(model.parameters()).device
    x = task.x_test.to(device)
    y = task.y_test.to(device)
    pred = model(x)
    n = int(y.shape[0])
    common = {"task": task.name, "n": n, "split": task.eval_split, "higher_is_better": task.higher_is_better}
    if task.regression:
        mse = torch.mean((pred.squeeze(-1).float() - y.float()) ** 2).item()
        return {**common, "metric": "mse", "accuracy": None, "accuracy_stderr": None, "mse": mse, "chance": None}
    acc = (pred.argmax(-1) == y).float().mean().item()
    return {
        **common,
        "metric": "acc",
        "accuracy": acc,
        "accuracy_stderr": math.sqrt(acc * (1 - acc) / max(n - 1, 1)),
        "chance": majority_rate(task),
    }


def majority_rate(task: ClassicTask) -> float:
    """Chance for classification: the test accuracy of always answering the training set's commonest class."""
    majority = int(torch.bincount(task.y_train.long().flatten()).argmax())
    return float((task.y_test.long() == majority).float().mean())


POSITIVE = ("good", "great", "excellent", "fine", "lovely", "superb", "pleasant", "brilliant", "happy", "solid")
NEGATIVE = ("bad", "awful", "terrible", "poor", "boring", "dull", "horrible", "weak", "sad", "broken")
NEUTRAL = (
    "the",
    "movie",
    "plot",
    "was",
    "and",
    "a",
    "story",
    "actor",
    "film",
    "it",
    "with",
    "scene",
    "ending",
    "music",
    "very",
    "quite",
    "this",
    "of",
    "in",
    "cast",
)


def build_classic(cfg: Mapping[str, Any]) -> ClassicTask:
    """Build ``task.kind`` ∈ {digits, regression, text_cls} as standardised tensors with seeded splits."""
    kind = cfg.get("kind")
    seed = int(cfg["seed"])
    test_fraction = float(cfg["test_fraction"])
    if kind == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        regression, params = False, {}
    elif kind == "regression":
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True)
        regression, params = True, {}
    elif kind == "text_cls":
        params = {k: int(cfg[k]) for k in ("n_samples", "n_features", "min_words", "max_words")}
        x, y = synthetic_sentiment(seed, **params)
        regression = False
    else:
        raise ConfigError(f"unknown classic task kind {kind!r}; valid choices: {', '.join(CLASSIC_KINDS)}")
    train_idx, test_idx = split_indices(len(y), test_fraction, seed)
    kept, held = carve_indices(len(train_idx), validation_fraction_of(cfg), seed)
    train_idx, val_idx = train_idx[kept], train_idx[held]
    split = eval_split_of(cfg)
    if split == "validation":  # scored on the carve; the test rows are never touched
        test_idx = val_idx
    x_train, x_test = standardise(x[train_idx], x[test_idx])
    y_train, y_test = y[train_idx], y[test_idx]
    if regression:
        mean, std = float(y_train.mean()), float(y_train.std()) or 1.0
        y_train, y_test = (y_train - mean) / std, (y_test - mean) / std
    out_features = 1 if regression else int(y.max()) + 1
    fingerprint = hashlib.sha256(
        json.dumps(
            {"kind": kind, "seed": seed, "test_fraction": test_fraction, **params, **split_fingerprint(cfg)},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:12]
    y_dtype = torch.float32 if regression else torch.long
    return ClassicTask(
        name=str(kind),
        x_train=torch.as_tensor(x_train, dtype=torch.float32),
        y_train=torch.as_tensor(y_train, dtype=y_dtype),
        x_test=torch.as_tensor(x_test, dtype=torch.float32),
        y_test=torch.as_tensor(y_test, dtype=y_dtype),
        regression=regression,
        info={
            "in_features": int(x.shape[1]),
            "out_features": out_features,
            "regression": regression,
            "n_train": len(train_idx),
            "n_test": len(test_idx),
        },
        fingerprint=fingerprint,
        eval_split=split,
    )


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded permutation cut in two: disjoint, and the same for every run seed (the benchmark is fixed)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit variance with the training split's statistics (constant features stay 0)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return (train - mean) / std, (test - mean) / std


def sentence(rng: np.random.Generator, min_words: int, max_words: int) -> tuple[str, int]:
    """One sentence and its label (1 positive, 0 negative); ties are redrawn so every label is decided."""
    while True:
        words, score = [], 0
        for _ in range(int(rng.integers(min_words, max_words + 1))):
            u = rng.random()
            if u < 0.55:
                words.append(str(rng.choice(NEUTRAL)))
                continue
            polarity = 1 if u < 0.775 else -1
            words.append(str(rng.choice(POSITIVE if polarity > 0 else NEGATIVE)))
            if rng.random() < 0.3:  # "not good" counts as negative: the label needs the bigram
                words.insert(len(words) - 1, "not")
                polarity = -polarity
            score += polarity
        if score != 0:
            return " ".join(words), int(score > 0)


def synthetic_sentiment(
    seed: int, n_samples: int = 2000, n_features: int = 512, min_words: int = 6, max_words: int = 14
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded sentences → hashed unigram+bigram counts (dense float64) and labels."""
    from sklearn.feature_extraction.text import HashingVectorizer

    rng = np.random.default_rng(seed)
    texts, labels = zip(*(sentence(rng, min_words, max_words) for _ in range(n_samples)), strict=True)
    vectorizer = HashingVectorizer(n_features=n_features, ngram_range=(1, 2), alternate_sign=False, norm=None)
    return vectorizer.transform(texts).toarray(), np.asarray(labels, dtype=np.int64)
