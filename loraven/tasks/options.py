"""The option schemas task kinds share: the split keys every task takes, and the LM evaluation options."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from loraven.schema import Section

MAX_VALIDATION_FRACTION = 0.5  # more than half held out would train a search's trials on scraps


class SplitOptions(Section):
    """``task.eval_split`` (what a run is scored on) and ``task.validation_fraction`` (the carve it needs)."""

    where: ClassVar[str] = "task"

    kind: str
    eval_split: Literal["test", "validation"]
    validation_fraction: float = Field(ge=0.0, le=MAX_VALIDATION_FRACTION)

    @model_validator(mode="after")
    def _validation_needs_a_carve(self) -> SplitOptions:
        if self.eval_split == "validation" and self.validation_fraction <= 0.0:
            raise ValueError(
                "task.eval_split=validation needs a validation split: set task.validation_fraction "
                f"(e.g. 0.1, carved from the training data; at most {MAX_VALIDATION_FRACTION})"
            )
        return self


class LMOptions(SplitOptions):
    """How an lm-eval task is scored and how much of it is used (conf/task_options/lm.yaml holds the defaults)."""

    metric: str | None  # null = the task's first metric
    filter: str | None  # null = the task's first filter
    num_fewshot: int | None = Field(ge=0)
    max_gen_toks: int | None = Field(ge=1)
    apply_chat_template: bool
    limit: int | None = Field(ge=1)  # documents evaluated per task; null = all (0 would silently mean all)
    max_seq_len: int | None = Field(ge=2)
    max_train_docs: int = Field(ge=1)
    retention: list[str]  # tasks scored before and after fine-tuning (loraven.retention: what a name may be)
    retention_limit: int | None = Field(ge=1)  # documents scored per retention task; null = all

    @model_validator(mode="after")
    def _retention_names(self) -> LMOptions:
        from loraven.retention import check_names

        check_names(self.retention)
        return self


class ClassicOptions(SplitOptions):
    """The tensor tasks' data seed and test share."""

    seed: int = Field(ge=0)
    test_fraction: float = Field(gt=0.0, lt=1.0)
