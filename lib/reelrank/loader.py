"""The one Petastorm boundary: Parquet shards written by Spark, read in place as batches of torch tensors.

Shards are one folder per split (``{root}/train``, ``{root}/val``, ``{root}/score``) of ``part-*.parquet``
files plus Spark's ``_SUCCESS`` and ``.crc`` side files, which the readers skip. Columns: ``user_idx``
and ``item_idx`` (int32), ``label`` (float32) and any number of float32 features named ``f_*``.

Batches come from :func:`petastorm.make_batch_reader` (whole row groups, decoded by reader threads)
and :class:`petastorm.pytorch.BatchedDataLoader` (columnar batching in torch); the row-wise
``petastorm.pytorch.DataLoader`` is ~25x slower for this kind of data (see ``bench/loader.py``).
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from petastorm import make_batch_reader
from petastorm.pytorch import BatchedDataLoader

from reelrank.columns import ITEM_IDX, LABEL, USER_IDX
from reelrank.errors import CorruptFile, first_line
from reelrank.warehouse import storage

log = logging.getLogger(__name__)

# petastorm 0.12 reads through pyarrow's legacy ParquetDataset, which pyarrow 14 (pinned for it) flags on every
# reader with FutureWarnings: 17 two-line warnings per nightly that no user can act on.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\.|$)")

FEATURE_PREFIX = "f_"
"""Every column whose name starts with this is a float32 model feature."""
ID_COLUMNS = (USER_IDX, ITEM_IDX)
REQUIRED_COLUMNS = {USER_IDX: pa.int32(), ITEM_IDX: pa.int32(), LABEL: pa.float32()}

Batch = dict[str, torch.Tensor]


class ShardError(ValueError):
    """A shard folder is missing, empty, or does not have the expected columns and types."""


def shard_url(shard_dir: str | os.PathLike) -> str:
    """A URL Petastorm accepts: ``file:///abs/path`` for local paths (also Spark's ``file:/path``); other
    schemes (``hdfs://``, ``s3://``) pass through unchanged. Unlike :func:`storage.url` a local path is not
    percent-encoded: Petastorm 0.12 takes the URL's path as it is, so ``/a%20b`` would not be ``/a b``."""
    raw = os.fspath(shard_dir)
    local = storage.local_path(raw)
    return "file://" + os.path.abspath(os.path.expanduser(local)) if local is not None else raw


def _dataset(shard_dir: str | os.PathLike) -> ds.Dataset:
    fs, path = pafs.FileSystem.from_uri(storage.url(os.fspath(shard_dir)))  # pyarrow decodes percent-escapes
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        raise ShardError(f"shard folder not found: {shard_dir}")
    # ignore_prefixes skips Spark's _SUCCESS / _committed_* and the hidden .crc checksum files.
    try:
        return ds.dataset(path, filesystem=fs, format="parquet", ignore_prefixes=["_", "."])
    except (pa.ArrowInvalid, OSError):  # the file it read the schema from is broken: say which
        check_footers([i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if _is_data_file(i)],
                      fs)
        raise


def _is_data_file(info: pafs.FileInfo) -> bool:
    return info.type == pafs.FileType.File and not info.base_name.startswith(("_", "."))


def check_footers(files: list[str], fs: pafs.FileSystem) -> None:
    """Read each Parquet file's footer (a few KB each): a truncated or overwritten shard raises
    :class:`CorruptFile` naming it, before a reader thread meets it mid-epoch."""
    for path in files:
        try:
            pq.read_metadata(path, filesystem=fs)
        except (pa.ArrowInvalid, OSError) as e:
            reason = re.sub(r"^Could not open Parquet input source '[^']*':\s*", "", first_line(str(e)))
            raise CorruptFile(path, f"shard file {path} is truncated or corrupt ({reason}): "
                                    f"rerun the stage that wrote it") from None


def check_shards(shard_dir: str | os.PathLike) -> None:
    """:func:`check_footers` on every data file of a shard folder."""
    dataset = _dataset(shard_dir)
    check_footers(dataset.files, dataset.filesystem)


def shard_schema(shard_dir: str | os.PathLike) -> tuple[list[str], int]:
    """The feature columns (``f_*``, in file order) and the row count, from Parquet metadata only.

    Raises :class:`ShardError` naming the column when a required column is missing or mistyped, and
    :class:`CorruptFile` naming the file when a shard's footer cannot be read.
    """
    dataset = _dataset(shard_dir)
    if not dataset.files:
        raise ShardError(f"no Parquet files in {shard_dir}")
    check_footers(dataset.files, dataset.filesystem)
    schema = dataset.schema
    for name, typ in REQUIRED_COLUMNS.items():
        if name not in schema.names:
            raise ShardError(f"{shard_dir}: missing column {name!r} (has {', '.join(schema.names)})")
        if schema.field(name).type != typ:
            raise ShardError(f"{shard_dir}: column {name!r} must be {typ}, got {schema.field(name).type}")
    features = [n for n in schema.names if n.startswith(FEATURE_PREFIX)]
    for name in features:
        if schema.field(name).type != pa.float32():
            raise ShardError(f"{shard_dir}: feature column {name!r} must be float, got {schema.field(name).type}")
    return features, dataset.count_rows()


def feature_moments(shard_dir: str | os.PathLike, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (population) of each feature over every row, streamed in float64.

    Non-finite values are ignored; a constant (or empty) feature gets std 1 so standardising it is a no-op
    scale."""
    n = np.zeros(len(features))
    s = np.zeros(len(features))
    ss = np.zeros(len(features))
    if features:
        for rb in _dataset(shard_dir).to_batches(columns=features):
            x = np.column_stack([rb.column(i).to_numpy(zero_copy_only=False) for i in range(len(features))])
            x = x.astype(np.float64)
            ok = np.isfinite(x)
            x = np.where(ok, x, 0.0)
            n += ok.sum(axis=0)
            s += x.sum(axis=0)
            ss += (x * x).sum(axis=0)
    mean = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    var = np.divide(ss, n, out=np.zeros_like(s), where=n > 0) - mean**2
    std = np.sqrt(np.clip(var, 0.0, None))
    std[std < 1e-12] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _to_tensor(values: np.ndarray) -> torch.Tensor:
    # Arrow hands out read-only buffers; torch warns on those, and copying one row group is cheap.
    return torch.from_numpy(values if values.flags.writeable else values.copy())


@contextmanager
def open_batches(
    shard_dir: str | os.PathLike,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    workers: int,
    num_epochs: int | None = 1,
    columns: list[str] | None = None,
    shuffle_buffer: int = 0,
    cur_shard: int | None = None,
    shard_count: int | None = None,
) -> Iterator[Iterable[Batch]]:
    """Batches of ``{column: tensor}`` over the shards in ``shard_dir``, read in place.

    ``shuffle`` shuffles the row-group order and the rows inside each row group (seeded by ``seed``) and, when
    ``shuffle_buffer > 0``, mixes rows across row groups through a buffer of that many rows (its order comes
    from torch's global RNG, which :func:`reelrank.train.train` seeds). ``num_epochs=None`` repeats forever.
    With ``workers > 1`` row groups arrive in whichever order the reader threads finish them, so only
    ``workers=1`` gives a reproducible order. ``cur_shard``/``shard_count`` give each of several training
    processes a disjoint subset of row groups. The last batch of an epoch may be short.
    """
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    fields = [re.escape(c) for c in columns] if columns else None
    reader = make_batch_reader(
        shard_url(shard_dir),
        schema_fields=fields,
        reader_pool_type="thread",
        workers_count=workers,
        seed=seed,
        shuffle_rows=shuffle,
        shuffle_row_groups=shuffle,
        num_epochs=num_epochs,
        cur_shard=cur_shard,
        shard_count=shard_count,
    )
    try:
        loader = BatchedDataLoader(
            reader,
            batch_size=batch_size,
            transform_fn=_to_tensor,
            shuffling_queue_capacity=shuffle_buffer if shuffle else 0,
        )
        yield loader
    finally:
        reader.stop()
        reader.join()


def write_shards(pdf: pd.DataFrame, shard_dir: str | os.PathLike, *, files: int, row_group_rows: int) -> str:
    """Write ``pdf`` as Spark lays out a split (``part-*.parquet`` plus ``_SUCCESS`` and ``.crc`` side files).

    For tests and benchmarks; the pipeline's shards come from Spark. Rows are split into ``files``
    contiguous parts, each with row groups of ``row_group_rows`` rows. Returns the folder's location."""
    location = storage.resolve(shard_dir)
    table = pa.Table.from_pandas(pdf, preserve_index=False)
    bounds = np.linspace(0, len(pdf), files + 1).astype(int)
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        name = f"part-{i:05d}-reelrank.snappy.parquet"
        buf = io.BytesIO()
        pq.write_table(table.slice(a, b - a), buf, row_group_size=row_group_rows)
        storage.write_bytes(storage.join(location, name), buf.getvalue())
        storage.write_bytes(storage.join(location, f".{name}.crc"), b"crc")
    storage.write_bytes(storage.join(location, "_SUCCESS"), b"")
    return location
