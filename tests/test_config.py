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
    assert load_config(CONF / "local.toml").data_dir == str((tmp_path / "d").resolve())


def test_replace_and_fingerprint():
    cfg = load_config(CONF / "base.toml")
    other = cfg.replace(score={"top_n": cfg.score.top_n + 1})
    assert other.score.top_n == cfg.score.top_n + 1
    assert other.fingerprint() != cfg.fingerprint()
    assert cfg.replace().fingerprint() == cfg.fingerprint()


# --- choices (Literal fields), ranges and the metric key, checked at load ---

CHOICES = [
    ("source", "kind", "excel", ["synthetic", "movielens-100k", "movielens-csv", "parquet", "csv"]),
    ("train", "model", "gbdt", ["mlp", "neumf"]),
    ("train", "loss", "bcee", ["bce", "bpr"]),
    ("train", "device", "gpu", ["auto", "cpu", "cuda"]),
    ("warehouse", "metastore", "mysql", ["derby", "external"]),
    ("spark", "log_level", "LOUD", ["ERROR", "WARN", "INFO", "DEBUG"]),
    ("quality", "metric", "auc", ["precision", "recall", "ndcg", "map", "hit_rate"]),
]


def test_candidate_sources_are_choices_and_hold_the_rankers_sources(tmp_path):
    with pytest.raises(ConfigError, match=r"candidates\.sources\[1\] must be one of 'als', 'item_neighbours', "
                                          r"'popular', 'recent_popular', 'ease', 'sasrec', 'gru4rec', got 'easy'"):
        load_config(_env_file(tmp_path, "[candidates]\nsources = ['als', 'easy']\n"))
    with pytest.raises(ConfigError,
                       match=r"candidates\.sources must be a list holding als, item_neighbours, popular, ease, sasrec"):
        load_config(_env_file(tmp_path, "[candidates]\nsources = ['als', 'popular']\n"))


def test_each_source_has_its_own_table_checked_as_strictly(tmp_path):
    """``[candidates.<name>]`` is the source's settings class: its keys are named with the file and the dotted key,
    a missing table is named, and the flat keys before issue 29 are unknown."""
    cfg = load_config(_env_file(tmp_path, "[candidates.ease]\nlam = 250.0\n[candidates.recent_popular]\ndays = 7\n"))
    assert (cfg.candidates["ease"].n, cfg.candidates["ease"].lam, cfg.candidates["recent_popular"].days) == (50, 250.0,
                                                                                                           7.0)
    with pytest.raises(ConfigError, match=r"env\.toml: unknown key candidates\.ease\.lamda \(known: block_users, lam, "
                                          r"max_items, n\)"):
        load_config(_env_file(tmp_path, "[candidates.ease]\nlamda = 250.0\n"))
    with pytest.raises(ConfigError, match=r"env\.toml: candidates\.ease\.n must be int, got str 'many'"):
        load_config(_env_file(tmp_path, "[candidates.ease]\nn = 'many'\n"))
    with pytest.raises(ConfigError, match=r"env\.toml: unknown key candidates\.ease_lambda"):
        load_config(_env_file(tmp_path, "[candidates]\nease_lambda = 500.0\n"))
    with pytest.raises(ConfigError, match=r"<replace>: \[candidates\.sasrec\] must be a table, got int"):
        cfg.replace(candidates={"sasrec": 50})
    text = (CONF / "base.toml").read_text().replace("[candidates.gru4rec]\nn = 50\n", "")
    (tmp_path / "base.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"base\.toml: missing key candidates\.gru4rec$"):
        load_config(tmp_path / "base.toml")


@pytest.mark.parametrize("section, key, bad, allowed", CHOICES, ids=[f"{s}.{k}" for s, k, _, _ in CHOICES])
def test_wrong_choice_names_key_value_and_allowed(tmp_path, section, key, bad, allowed):
    with pytest.raises(ConfigError) as e:
        load_config(_env_file(tmp_path, f"[{section}]\n{key} = '{bad}'\n"))
    msg = str(e.value)
    assert "env.toml" in msg and f"{section}.{key} must be one of " in msg and msg.endswith(f"got '{bad}'")
    assert all(repr(a) in msg for a in allowed), msg


def test_wrong_choice_message_is_exact(tmp_path):
    with pytest.raises(ConfigError, match=r"env\.toml: train\.loss must be one of 'bce', 'bpr', got 'bcee'$"):
        load_config(_env_file(tmp_path, "[train]\nloss = 'bcee'\n"))


def test_choice_must_be_a_string(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.device must be one of .*got 1$"):
        load_config(_env_file(tmp_path, "[train]\ndevice = 1\n"))


def test_replace_checks_choices_too():
    with pytest.raises(ConfigError, match=r"<replace>: train\.model must be one of 'mlp', 'neumf', got 'nope'"):
        load_config(CONF / "base.toml").replace(train={"model": "nope"})


def test_literals_match_the_implementations():
    """The config's choices are the names the code knows (these modules import torch / pyspark, not a session)."""
    import typing

    from reelrank import config, device, models, ranking_metrics
    from reelrank.inputs import sources

    assert set(typing.get_args(config.ModelName)) == set(models.RANKERS)
    assert typing.get_args(config.DeviceSetting) == device.DEVICE_SETTINGS
    assert typing.get_args(config.RankingMetric) == tuple(ranking_metrics.PER_USER)
    assert sources.KINDS == typing.get_args(config.SourceKind)


RANGES = [
    ("score", "top_n", "0", "> 0"),
    ("train", "epochs", "0", "> 0"),
    ("train", "batch_size", "-1", "> 0"),
    ("train", "learning_rate", "0.0", "> 0"),
    ("train", "dropout", "1.0", r"in \[0, 1\)"),
    ("train", "hidden", "[64, 0]", "> 0"),
    ("candidates.als", "n", "0", "> 0"),
    ("candidates.item_neighbours", "n", "0", "> 0"),
    ("candidates.popular", "n", "-5", "> 0"),
    ("candidates.recent_popular", "days", "0.0", "> 0"),
    ("candidates.ease", "lam", "0.0", "> 0"),
    ("candidates.ease", "max_items", "0", "> 0"),
    ("candidates", "refit_max_interactions", "-1", ">= 0"),
    ("features", "val_fraction", "1.5", r"in \[0, 1\]"),
    ("features", "val_fraction", "-0.1", r"in \[0, 1\]"),
    ("neighbours", "top_k", "0", "> 0"),
    ("neighbours", "shrinkage", "-1.0", ">= 0"),
    ("als", "rank", "0", "> 0"),
    ("als", "max_iter", "0", "> 0"),
    ("als", "tune_ranks", "[32, -64]", "> 0"),
    ("evaluate", "ks", "[10, 0]", "> 0"),
    ("quality", "k", "0", "> 0"),
    ("score", "top_n", "-5", "> 0"),
    ("neighbours", "k", "0", "> 0"),
    ("features", "rows_per_row_group", "0", "> 0"),
    ("sequence", "max_len", "0", "> 0"),
    ("quality", "min_rows_ratio", "-0.5", ">= 0"),
    ("warehouse", "grace_hours", "-1.0", ">= 0"),
]


@pytest.mark.parametrize("size", ["0", "-4g", "4 g", "4gb", "lots", ""])
def test_driver_memory_must_be_a_jvm_size(tmp_path, size):
    with pytest.raises(ConfigError, match=rf"spark\.driver_memory must be a JVM memory size.*got '{size}'$"):
        load_config(_env_file(tmp_path, f"[spark]\ndriver_memory = '{size}'\n"))


@pytest.mark.parametrize("section, key, bad, expect", RANGES, ids=[f"{s}.{k}={v}" for s, k, v, _ in RANGES])
def test_out_of_range_names_key_value_and_expectation(tmp_path, section, key, bad, expect):
    key_re = rf"{section}\.{key}(\[\d+\])?"
    with pytest.raises(ConfigError, match=rf"env\.toml: {key_re} must be {expect}, got -?[\d.]+$"):
        load_config(_env_file(tmp_path, f"[{section}]\n{key} = {bad}\n"))


def test_in_range_edges_load(tmp_path):
    cfg = load_config(_env_file(tmp_path, "[features]\nval_fraction = 1.0\n[train]\ndropout = 0.0\nthreads = 0\n"
                                          "[neighbours]\nmax_ratings_per_user = 0\n"))
    assert cfg.features.val_fraction == 1.0 and cfg.train.dropout == 0.0


@pytest.mark.parametrize("metric", ["ndcg@10", "map@5", "hit_rate@1", "precision@20", "recall@3", "rmse", "mae"])
def test_tune_metric_accepts(tmp_path, metric):
    assert load_config(_env_file(tmp_path, f"[evaluate]\ntune_metric = '{metric}'\n")).evaluate.tune_metric == metric


@pytest.mark.parametrize("metric", ["ndcg", "ndcg@", "ndcg@0", "ndcg@x", "auc@10", "rmse@10", "NDCG@10", ""])
def test_tune_metric_rejects(tmp_path, metric):
    with pytest.raises(
        ConfigError, match=rf"env\.toml: evaluate\.tune_metric must be rmse, mae or NAME@K .*got '{metric}'$"
    ):
        load_config(_env_file(tmp_path, f"[evaluate]\ntune_metric = '{metric}'\n"))


def test_parse_metric_key():
    from reelrank.metric_keys import parse_metric_key

    assert parse_metric_key("ndcg@10") == ("ndcg", 10)
    assert parse_metric_key("hit_rate@1") == ("hit_rate", 1)
    assert parse_metric_key("rmse") == ("rmse", None)
    for bad, why in [("ndcg", "needs a cut-off"), ("ndcg@0", "positive integer"), ("ndcg@-1", "positive integer"),
                     ("mae@3", "unknown metric"), ("auc@10", "unknown metric")]:
        with pytest.raises(ValueError, match=why):
            parse_metric_key(bad)


# --- the data dir: --data-dir (an explicit override) > $REELRANK_DATA_DIR > the files, resolved once ---


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("REELRANK_DATA_DIR", raising=False)
    env_file = _env_file(tmp_path, f"[warehouse]\ndata_dir = '{tmp_path / 'from-file'}'\n")
    assert load_config(env_file).data_dir == str(tmp_path / "from-file")
    monkeypatch.setenv("REELRANK_DATA_DIR", str(tmp_path / "from-env"))
    assert load_config(env_file).data_dir == str(tmp_path / "from-env")
    explicit = load_config(env_file, {"warehouse": {"data_dir": str(tmp_path / "from-flag")}})
    assert explicit.data_dir == str(tmp_path / "from-flag")


def test_data_dir_is_resolved_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REELRANK_DATA_DIR", raising=False)
    cfg = load_config(CONF / "base.toml")  # data_dir = "~/.local/share/reelrank"
    assert cfg.warehouse.data_dir == str(tmp_path / "home" / ".local" / "share" / "reelrank")
    assert cfg.data_dir == cfg.warehouse.data_dir and Path(cfg.data_dir).is_absolute()
    monkeypatch.setenv("REELRANK_DATA_DIR", str(tmp_path / "later"))  # read at load, not on access
    assert cfg.data_dir == str(tmp_path / "home" / ".local" / "share" / "reelrank")
    assert cfg.replace(score={"top_n": 3}).data_dir == cfg.data_dir  # replace does not read the env again
    moved = cfg.replace(warehouse={"data_dir": "~/elsewhere"})
    assert moved.data_dir == str(tmp_path / "home" / "elsewhere")


def test_relative_data_dir_is_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REELRANK_DATA_DIR", "rel/data")
    assert load_config(CONF / "base.toml").warehouse.data_dir == str(tmp_path / "rel" / "data")


@pytest.mark.parametrize("text, message", [
    ("[evaluate]\nks = []\n", r"evaluate\.ks must be a non-empty list, got \[\]"),
    ("[ingest]\nrating_min = 5.0\nrating_max = 1.0\n",
     r"ingest\.rating_max must be greater than ingest\.rating_min, got 1\.0"),
    ("[ingest]\nrating_min = 0.5\nrating_max = 5.0\nrating_step = 0.4\n",
     r"ingest\.rating_step must be 0 or a step that divides ingest\.rating_max - ingest\.rating_min into whole "
     r"steps, got 0\.4"),
    ("[ingest]\nrating_step = 5.0\n", r"ingest\.rating_step must be 0 or a step .*got 5\.0"),
    ("[quality]\nk = 5\n", r"quality\.k must be one of evaluate\.ks .*got 5"),
    ("[candidates]\nsources = ['popular']\n", r"candidates\.sources must be a list holding .*got \['popular'\]"),
    ("[candidates]\nserve_from_history = ['gru4rec']\n",
     r"candidates\.serve_from_history must be a subset of candidates\.sources, got \['gru4rec'\]"),
])
def test_inconsistent_fields_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=rf"env\.toml: {message}"):
        load_config(_env_file(tmp_path, text))


def test_only_sources_that_can_score_later_data_serve_from_their_history_fit(tmp_path):
    with pytest.raises(ConfigError, match=r"candidates\.serve_from_history.*'item_neighbours'"):
        load_config(_env_file(tmp_path, "[candidates]\nserve_from_history = ['item_neighbours']\n"))
    with pytest.raises(ConfigError, match=r"candidates\.serve_from_history must be without als unless als\.implicit"):
        load_config(_env_file(tmp_path, "[als]\nimplicit = false\n[candidates]\nserve_from_history = ['als']\n"))
    with pytest.raises(ConfigError, match=r"candidates\.serve_from_history must be without als unless"):
        load_config(_env_file(tmp_path, "[als]\nnonnegative = true\n[candidates]\nserve_from_history = ['als']\n"))
    cfg = load_config(_env_file(tmp_path, "[candidates]\nserve_from_history = ['als', 'sasrec']\n"))
    assert cfg.candidates.serve_from_history == ["als", "sasrec"]


def test_quality_k_outside_ks_is_fine_when_the_gate_is_off(tmp_path):
    assert load_config(_env_file(tmp_path, "[quality]\nenabled = false\nk = 5\n")).quality.k == 5


@pytest.mark.parametrize("name", ["reelrank; DROP TABLE x", "1nights", "a-b", "", "x" * 129])
def test_database_must_be_an_identifier(tmp_path, name):
    with pytest.raises(ConfigError, match=r"env\.toml: warehouse\.database must be an SQL identifier .*got '"):
        load_config(_env_file(tmp_path, f'[warehouse]\ndatabase = "{name}"\n'))
    assert load_config(_env_file(tmp_path, '[warehouse]\ndatabase = "night_2"\n')).warehouse.database == "night_2"


def test_embedding_dim_zero_means_features_only_and_neumf_needs_ids(tmp_path):
    assert load_config(_env_file(tmp_path, "[train]\nembedding_dim = 0\n")).train.embedding_dim == 0
    with pytest.raises(ConfigError, match=r"train\.embedding_dim must be > 0 for train\.model = 'neumf', got 0"):
        load_config(_env_file(tmp_path, "[train]\nmodel = 'neumf'\nembedding_dim = 0\n"))


@pytest.mark.parametrize("text, message", [
    ("[ingest]\nrating_step = -0.5\n", r"ingest\.rating_step must be >= 0, got -0\.5"),
    ("[ingest]\nmax_rejected_share = 1.5\n", r"ingest\.max_rejected_share must be in \[0, 1\], got 1\.5"),
    ("[ingest]\nmax_rejected_share = -0.1\n", r"ingest\.max_rejected_share must be in \[0, 1\], got -0\.1"),
    ("[ingest]\ntimestamp_units = 'milliseconds'\n",
     r"ingest\.timestamp_units must be one of 'seconds', 'auto', got 'milliseconds'"),
    ("[ingest]\nfuture_slack_days = -1\n", r"ingest\.future_slack_days must be >= 0, got -1\.0"),
])
def test_ingest_settings_are_checked_at_load(tmp_path, text, message):
    with pytest.raises(ConfigError, match=rf"env\.toml: {message}"):
        load_config(_env_file(tmp_path, text))


def test_ingest_settings_in_range_load(tmp_path):
    text = ("[ingest]\nrating_min = 0.5\nrating_max = 5.0\nrating_step = 0.5\nmax_rejected_share = 0\n"
            "timestamp_units = 'auto'\nfuture_slack_days = 0\n")  # fmt: skip
    ing = load_config(_env_file(tmp_path, text)).ingest
    assert (ing.rating_step, ing.max_rejected_share, ing.timestamp_units, ing.future_slack_days) == (
        0.5, 0.0, "auto", 0.0
    )
    assert load_config(_env_file(tmp_path, "[ingest]\nrating_step = 0.1\n")).ingest.rating_step == 0.1  # 40 steps
