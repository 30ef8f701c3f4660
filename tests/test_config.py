"""Config loading: layered TOML into frozen dataclasses, with errors that name the key or file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from reelrank.config import ConfigError, load_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def _env_file(tmp_path: Path, text: str) -> Path:
    (tmp_path / "base.toml").write_text((CONF / "base.toml").read_text())
    path = tmp_path / "env.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["base.toml", "local.toml", "cluster.toml"])
def test_every_shipped_config_loads(name):
    cfg = load_config(CONF / name)
    assert cfg.spark.master
    assert cfg.score.top_n > 0


def test_environment_file_overrides_base(tmp_path):
    cfg = load_config(_env_file(tmp_path, "[score]\ntop_n = 7\n[spark]\nextra = { 'spark.x' = 3 }\n"))
    assert cfg.score.top_n == 7
    assert cfg.spark.extra == {"spark.x": "3"}
    assert cfg.als.rank == load_config(CONF / "base.toml").als.rank


def test_config_is_frozen():
    cfg = load_config(CONF / "base.toml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.score.top_n = 3  # type: ignore[misc]


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key score\.top_m"):
        load_config(_env_file(tmp_path, "[score]\ntop_m = 7\n"))


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key scoring"):
        load_config(_env_file(tmp_path, "[scoring]\ntop_n = 7\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"score\.top_n must be int, got str"):
        load_config(_env_file(tmp_path, "[score]\ntop_n = 'ten'\n"))


def test_bool_is_not_an_int(tmp_path):
    with pytest.raises(ConfigError, match=r"als\.rank must be int"):
        load_config(_env_file(tmp_path, "[als]\nrank = true\n"))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_missing_key_is_named(tmp_path):
    (tmp_path / "base.toml").write_text((CONF / "base.toml").read_text().replace("top_n = 10\n", ""))
    with pytest.raises(ConfigError, match=r"missing key score\.top_n"):
        load_config(tmp_path / "base.toml")


def test_invalid_toml_names_file(tmp_path):
    with pytest.raises(ConfigError, match="env.toml: invalid TOML"):
        load_config(_env_file(tmp_path, "[score\n"))


def test_data_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("REELRANK_DATA_DIR", str(tmp_path / "d"))
    assert load_config(CONF / "local.toml").data_dir == (tmp_path / "d").resolve()


def test_replace_and_fingerprint():
    cfg = load_config(CONF / "base.toml")
    other = cfg.replace(score={"top_n": cfg.score.top_n + 1})
    assert other.score.top_n == cfg.score.top_n + 1
    assert other.fingerprint() != cfg.fingerprint()
    assert cfg.replace().fingerprint() == cfg.fingerprint()
