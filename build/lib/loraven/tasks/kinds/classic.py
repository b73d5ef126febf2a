"""The paper's §5.2/§5.3 tensor tasks as task kinds: ``digits`` (image), ``regression`` (diabetes MSE) and
``text_cls`` (synthetic sentiment); the data and scoring live in :mod:`loraven.tasks.classic`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from loraven.tasks.base import register_task
from loraven.tasks.classic import ClassicTask, build_classic
from loraven.tasks.options import ClassicOptions


class TextClsConfig(ClassicOptions):
    n_samples: int = Field(ge=10)
    n_features: int = Field(ge=8)
    min_words: int = Field(ge=1)
    max_words: int = Field(ge=1)

    @model_validator(mode="after")
    def _word_range(self) -> TextClsConfig:
        if self.min_words > self.max_words:
            raise ValueError(f"task.min_words={self.min_words} > task.max_words={self.max_words}; need min <= max")
        return self


@register_task("digits", config=ClassicOptions, family="image-classification")
def build_digits(settings: ClassicOptions, data_root: Path) -> ClassicTask:
    """scikit-learn's 8×8 digits (1,797 images, 10 classes): the offline stand-in for CIFAR-10."""
    return build_classic(settings.dump())


@register_task(
    "regression",
    config=ClassicOptions,
    family="regression",
    default_metric="mse",
    metric_directions={"mse": False},
)
def build_regression(settings: ClassicOptions, data_root: Path) -> ClassicTask:
    """scikit-learn's diabetes data (442 rows, 10 features), target standardised: MSE 1.0 = the mean."""
    return build_classic(settings.dump())


@register_task("text_cls", config=TextClsConfig, family="text-classification")
def build_text_cls(settings: TextClsConfig, data_root: Path) -> ClassicTask:
    """Seeded synthetic sentiment sentences ("not" flips the next polar word) → hashed n-gram counts."""
    return build_classic(settings.dump())
