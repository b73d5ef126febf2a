"""Every bad value of the fault attack (tests/fault_cases.py) is one line naming it, from the one validator, before
anything starts (issue 26). The CLI runs the same validator; tests/e2e/test_fault_attack.py checks that end to end."""

from __future__ import annotations

import pytest
from conftest import compose_cfg
from fault_cases import BAD_VALUES

from loraven.errors import ConfigError
from loraven.run_config import validate_run_config


@pytest.mark.parametrize(("group", "overrides", "words"), BAD_VALUES, ids=[" ".join(c[1][-2:]) for c in BAD_VALUES])
def test_bad_value_is_one_line_naming_it(group: str, overrides: list[str], words: list[str]) -> None:
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as info:
        validate_run_config(cfg)
    message = str(info.value)
    assert "\n" not in message, message
    assert all(w in message for w in words), f"{words} not all in: {message}"


def test_the_defaults_of_every_group_still_validate() -> None:
    for overrides in (
        [],
        ["adapter=lora"],
        ["adapter=dora"],
        ["adapter=lora_ar"],
        ["adapter=none"],
        ["scheduler=energy"],
        ["energy=codecarbon"],
        ["tracking=wandb"],
        ["task=commonsense"],
        ["task=glue"],
        ["task=gsm8k"],
        ["model=mlp_digits", "task=digits", "trainer=classic"],
    ):
        validate_run_config(compose_cfg(overrides))
