"""No credential from any source reaches a file (issue 26): key names in any case style, nested values, token-shaped
values, and the pre-Hydra check of the command line and of the composed config (YAML files included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loraven.cli import precheck
from loraven.track import credential_paths, is_credential_key, looks_like_secret, redact

CREDENTIAL_KEYS = [
    "hf_token", "HF_TOKEN", "accessToken", "hf.accessToken", "api-key", "apiKey", "APIKey", "wandb_key",
    "passwd", "AWS_SECRET_ACCESS_KEY", "client_secret", "Authorization", "privateKey", "auth_token", "cookie",
]  # fmt: skip
NOT_CREDENTIALS = [
    "tokens_per_s", "train_tokens", "max_new_tokens", "max_gen_toks", "r_max", "tokenizer", "author", "keys",
    "r_key", "sort_key", "monkey", "key", "passage",
]  # fmt: skip


@pytest.mark.parametrize("key", CREDENTIAL_KEYS)
def test_credential_keys_in_any_case_style(key: str) -> None:
    assert is_credential_key(key)


@pytest.mark.parametrize("key", NOT_CREDENTIALS)
def test_counters_and_ordinary_keys_are_not_credentials(key: str) -> None:
    assert not is_credential_key(key)


def test_token_shaped_values_and_environment_secrets(monkeypatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "Zq8xPlantedEnvValue")
    assert looks_like_secret("hf_AbCdEfGhIjKlMnOpQrStUvWx12")
    assert looks_like_secret("prefix Zq8xPlantedEnvValue suffix")
    assert looks_like_secret("-----BEGIN RSA PRIVATE KEY-----")
    assert not looks_like_secret("a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2")  # a git sha is not a token
    assert not looks_like_secret(str(Path.cwd()))  # $PWD is not a password
    tree = {"a": {"b": [{"hfToken": "x1"}, {"ok": 1}]}, "c": "hf_AbCdEfGhIjKlMnOpQrStUvWx12"}
    tree["d"] = {"token": "${oc.env:T}"}
    assert credential_paths(tree) == ["a.b[0].hfToken", "c"]  # an interpolation is how a credential is passed
    assert redact(tree)["a"]["b"][0]["hfToken"] == "<redacted>" and redact(tree)["c"] == "<redacted>"


ROUTES = [
    ["+tracking.api_key=abcdefgh"],
    ["+hf.accessToken=abcdefgh"],
    ["+extra={api_key: abcdefgh}"],
    ["+extra=[{token: abcdefgh}]"],
    ["++hydra.job.env_set={HF_TOKEN: abcdefgh}"],
    ["+hydra.job.env_set.WANDB_API_KEY=abcdefgh"],
    ["+note=hf_AbCdEfGhIjKlMnOpQrStUvWx12"],
    ["-m", "+password=abcdefgh,other"],
]


@pytest.mark.parametrize("argv", ROUTES, ids=[r[-1][:30] for r in ROUTES])
def test_every_command_line_route_is_refused_in_one_line(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        precheck.check(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and "credential" in err
    assert "abcdefgh" not in err and "hf_AbCd" not in err  # the value is never echoed


def test_a_credential_in_a_config_file_is_refused_before_hydra_writes(tmp_path: Path, capsys) -> None:
    (tmp_path / "extra").mkdir()
    (tmp_path / "leaky.yaml").write_text("defaults:\n  - config\n  - _self_\ntracking:\n  api_key: planted123\n")
    (tmp_path / "extra" / "leak.yaml").write_text("# @package _global_\nsome:\n  hfAccessToken: planted456\n")
    (tmp_path / "extra" / "env.yaml").write_text("# @package hydra.job.env_set\nWANDB_API_KEY: planted789\n")
    (tmp_path / "extra" / "fine.yaml").write_text("# @package _global_\nsome:\n  token: ${oc.env:HF_TOKEN,none}\n")
    for argv, key in (
        (["--config-dir", str(tmp_path), "--config-name", "leaky"], "tracking.api_key"),
        (["--config-dir", str(tmp_path), "+extra=leak"], "some.hfAccessToken"),
        (["--config-dir", str(tmp_path), "+extra=env"], "hydra.job.env_set.WANDB_API_KEY"),
    ):
        with pytest.raises(SystemExit) as info:
            precheck.check(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and key in err and "planted" not in err
    precheck.check(["--config-dir", str(tmp_path), "+extra=fine"])  # an interpolation passes: nothing on disk
    assert not list(tmp_path.rglob(".hydra"))


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["adapter=loraa"], ["Could not find 'adapter/loraa'", "dora, lora, lora_ar, loraven, none"]),
        (["nope=1"], ["nope", "+nope=1"]),
        (["trainer.lr=0.1=2"], ["mismatched input"]),
        (["seed=0,1"], ["--multirun"]),
        (["seed=${nope}"], ["nope"]),
        (["hydra/launcher=nope"], ["hydra/launcher"]),
        (["--config-dir", "/nope/dir"], ["/nope/dir"]),
        (["--config-name", "nope"], ["nope"]),
        (["hydra.job.name=../../x"], ["hydra.job.name", "safe name"]),
    ],
)
def test_hydra_composition_errors_are_one_line_exit_2(argv: list[str], words: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        precheck.check(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert all(w in err for w in words), err


def test_full_error_shows_hydras_exception(monkeypatch) -> None:
    from hydra.errors import MissingConfigException

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(MissingConfigException):
        precheck.check(["adapter=loraa"])


def test_a_good_command_line_passes() -> None:
    precheck.check(["adapter=lora", "seed=1"])
    precheck.check(["-m", "seed=0,1", "adapter=lora,dora"])
    precheck.check(["--help"])
