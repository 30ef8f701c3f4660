"""train() end to end on tiny shards with a learnable label; the device choice; the progress bar; multi-process."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import rankdata

from reelrank import models
from reelrank.columns import ITEM_IDX, LABEL, USER_IDX
from reelrank.device import DeviceError, choose_device, use_mixed_precision
from reelrank.loader import write_shards
from reelrank.models import EpochStats
from reelrank.train import ProgressBar, checkpoint_path, train

N_USERS, N_ITEMS = 80, 50
FEATURES = ["f_als_score", "f_item_age", "f_user_std", "f_genre_affinity"]


def frame(rows: int, seed: int) -> pd.DataFrame:
    """The label is a noisy threshold of a linear function of two features on very different scales."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, len(FEATURES))) * [1.0, 300.0, 0.01, 1.0] + [0.0, 2000.0, 0.5, 0.0]
    z = x[:, 0] - (x[:, 1] - 2000.0) / 300.0 + 0.4 * rng.standard_normal(rows)
    pdf = pd.DataFrame({USER_IDX: rng.integers(0, N_USERS, rows).astype(np.int32),
                        ITEM_IDX: rng.integers(0, N_ITEMS, rows).astype(np.int32),
                        LABEL: (z > 0).astype(np.float32)})
    for k, name in enumerate(FEATURES):
        pdf[name] = x[:, k].astype(np.float32)
    return pdf


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC from ranks (ties averaged), independent of the model code."""
    r = rankdata(scores)
    pos = labels > 0.5
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-shards")
    return {"train": write_shards(frame(4000, 0), root / "train", files=4, row_group_rows=300),
            "val": write_shards(frame(1000, 1), root / "val", files=2, row_group_rows=250)}


def small(cfg, **over):
    base = {"epochs": 3, "batch_size": 256, "learning_rate": 0.01, "hidden": [16, 8], "embedding_dim": 4,
            "reader_workers": 1, "shuffle_buffer": 1000, "device": "cpu"}
    return cfg.replace(train=base | over).train


def test_train_end_to_end_learns_the_label(cfg, shards, tmp_path):
    c = small(cfg)
    out = tmp_path / "models" / "mlp.pt"
    result = train(str(shards["train"]), str(shards["val"]), c, out, N_USERS, N_ITEMS)

    assert result.model_path == str(out) and out.exists() and out.with_suffix(".json").exists()
    assert not Path(checkpoint_path(result.model_path)).exists()
    assert result.device == "cpu" and result.num_processes == 1
    assert len(result.train_loss) == len(result.val_loss) == 3
    assert result.train_loss[-1] < 0.6 * result.train_loss[0]  # initial loss ~ln 2
    assert result.samples_per_s > 0
    val = frame(1000, 1)
    val_auc = auc(val[LABEL].to_numpy(), models.load(out).score_frame(val))
    assert val_auc > 0.9, val_auc


def test_train_is_reproducible(cfg, shards, tmp_path):
    c = small(cfg, epochs=1, threads=1)
    threads = torch.get_num_threads()
    a = train(str(shards["train"]), None, c, tmp_path / "a.pt", N_USERS, N_ITEMS)
    b = train(str(shards["train"]), None, c, tmp_path / "b.pt", N_USERS, N_ITEMS)
    assert torch.get_num_threads() == threads  # the process-wide setting is put back
    assert a.train_loss == b.train_loss and a.val_loss == [None]
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_choose_device():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not use_mixed_precision(torch.device("cpu"))
    with pytest.raises(DeviceError, match="train.device"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA"):
            choose_device("cuda")


def test_progress_bar_draws_loss_and_speed():
    out = io.StringIO()
    bar = ProgressBar(out, draw=True)
    bar.start_epoch(0, 2, 1000)
    bar.batch(500, 0.5)
    bar._render(bar._t0 + 1.0)
    bar.end_epoch(EpochStats(0, 0.5, 0.4, 0.7, 1000.0, 1.0))
    text = out.getvalue()
    assert text.startswith("\repoch 1/2 [") and "loss 0.5000" in text and "samples/s" in text and text.endswith("\n")
    quiet = io.StringIO()
    ProgressBar(quiet, draw=False).batch(10, 0.1)
    assert quiet.getvalue() == ""


def test_without_a_terminal_a_long_epoch_logs_a_line_per_quarter(caplog):
    """A scheduler's log sees a long epoch move (25%, 50%, 75%, then the epoch line), never a carriage return."""
    caplog.set_level("INFO", logger="reelrank.train")
    out = io.StringIO()
    bar = ProgressBar(out, draw=False, quiet_s=0.0)
    bar.start_epoch(0, 1, 1000)
    for _ in range(10):
        bar.batch(100, 0.5)
    bar.end_epoch(EpochStats(0, 0.5, 0.4, 0.7, 1000.0, 1.0))
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split("%")[0].split()[-1] for line in lines[:-1]] == ["30", "50", "80"]  # first batch past each step
    assert all("of 1,000 rows, loss 0.5000" in line for line in lines[:-1]) and lines[-1].startswith("epoch 1/1 ")
    assert out.getvalue() == ""
    patient = ProgressBar(io.StringIO(), draw=False)  # the default: a short epoch stays at one line
    patient.start_epoch(0, 1, 1000)
    patient.batch(1000, 0.5)
    assert len(caplog.records) == len(lines)


@pytest.mark.gpu
def test_train_on_cuda_matches_cpu_scoring(cfg, shards, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    c = small(cfg, device="cuda")
    result = train(str(shards["train"]), str(shards["val"]), c, tmp_path / "gpu.pt", N_USERS, N_ITEMS)
    assert result.device.startswith("cuda")
    val = frame(1000, 1)
    assert auc(val[LABEL].to_numpy(), models.load(result.model_path).score_frame(val)) > 0.9


@pytest.mark.spark
@pytest.mark.slow
def test_two_processes_through_torch_distributor(spark, cfg, shards, tmp_path):
    c = small(cfg, num_processes=2, epochs=2)
    out = tmp_path / "ddp.pt"
    result = train(str(shards["train"]), str(shards["val"]), c, out, N_USERS, N_ITEMS)
    assert result.num_processes == 2 and out.exists()
    assert len(result.train_loss) == 2 and result.train_loss[-1] < result.train_loss[0]
    val = frame(1000, 1)
    assert auc(val[LABEL].to_numpy(), models.load(out).score_frame(val)) > 0.85
