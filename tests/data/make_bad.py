"""Generate the bad-input corpus under tests/data/bad/: one small folder per case, read as the generic ``csv`` source.

Regenerate (deterministic: same bytes every time, stale files removed) with

    .venv/bin/python tests/data/make_bad.py

tests/test_bad_inputs.py states each case's expected outcome by line number (the header is line 1), so a change
here needs the matching change there.
"""

from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

BAD = Path(__file__).resolve().parent / "bad"
HEADER = "user_id,item_id,rating,timestamp"
T = 1_700_000_000
"""A plausible timestamp in unix seconds (2023-11-14)."""
RUN_END_PLUS_SLACK = 1_796_342_400
"""2026-12-04T00:00:00Z: the end of run date 2026-12-02 plus the default one day of slack."""


def _csv(*lines: str, header: str = HEADER, newline: str = "\n") -> bytes:
    return newline.join([header, *lines]).encode("utf-8") + newline.encode()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as out:  # no name, no time: same bytes
        out.write(data)
    return buf.getvalue()


def cases() -> dict[str, dict[str, bytes]]:
    """Case name -> {file name: content}."""
    ok = f"u1,i1,4,{T}"
    return {
        # ---- structure
        "wrong_delimiter": {"data.csv": _csv(f"u1;i1;4;{T}", f"u2;i2;3;{T}", header=HEADER.replace(",", ";"))},
        "missing_column": {"data.csv": _csv(f"u1,i1,{T}", header="user_id,item_id,timestamp")},
        "extra_columns": {
            "data.csv": _csv(f"u1,Alien,i1,4,{T},great", f"u2,Heat,i2,3,{T},",
                             header="user_id,title,item_id,rating,timestamp,comment")  # fmt: skip
        },
        "short_and_long_lines": {"data.csv": _csv(ok, "u2,i2", "u3", f"u4,i4,4,{T},extra")},
        "header_only": {"data.csv": _csv()},
        "empty_file": {"data.csv": b""},
        "bom": {"data.csv": b"\xef\xbb\xbf" + _csv(ok, f"u2,i2,3,{T}")},
        "crlf": {"data.csv": _csv(ok, f"u2,i2,3,{T}", f"u3,i3,x,{T}", newline="\r\n")},
        "gzip": {"data.csv.gz": _gzip(_csv(ok, f"u2,i2,3,{T}", f"u3,,3,{T}"))},
        "quoted_commas": {
            "data.csv": _csv(f'"a,b",i1,4,{T}', f'u2,"Heat, 1995",3,{T}', f'"u3","i3","5","{T}"',
                             f'u4,"say ""hi""",2,{T}')  # fmt: skip
        },
        # ---- ratings
        "decimal_comma": {"data.csv": _csv(f'u1,i1,"3,5",{T}', f'u2,i2,"4,0",{T}', f"u3,i3,3.5,{T}")},
        "non_numeric_rating": {
            "data.csv": _csv(f"u1,i1,abc,{T}", f"u2,i1,,{T}", f"u3,i1,four,{T}", f"u4,i1,5 stars,{T}",
                             f"u5,i1,4,{T}", f"u6,i1, 4 ,{T}")  # fmt: skip
        },
        "nan_inf_rating": {
            "data.csv": _csv(*(f"u{k},i1,{r},{T}" for k, r in
                               enumerate(["NaN", "nan", "inf", "Infinity", "-Infinity", "+inf", "4"], 1)))  # fmt: skip
        },
        "out_of_range_rating": {
            "data.csv": _csv(*(f"u{k},i1,{r},{T}" for k, r in
                               enumerate(["0", "0.99", "5.01", "6", "-1", "1e10", "1", "5", "3.7", "1e0"], 1)))
        },
        # ---- identifiers
        "empty_ids": {"data.csv": _csv(f",i1,4,{T}", f"  ,i1,4,{T}", f"u1,,4,{T}", f'"",i1,4,{T}', f"u2,i2,4,{T}")},
        "negative_ids": {"data.csv": _csv(f"-5,-1,4,{T}", f"0,-0,3,{T}", f"-0,0,2,{T}")},
        "overflow_ids": {
            "data.csv": _csv(f"9223372036854775808,18446744073709551616,4,{T}",
                             f"-9223372036854775809,9223372036854775807,3,{T}", f"0042,42,2,{T}")  # fmt: skip
        },
        "long_ids": {"data.csv": _csv(f"{'u' * 10_000},i1,4,{T}", f"u2,{'i' * 10_000},3,{T}")},
        "unicode_ids": {
            "data.csv": _csv(f"🎬,电影,4,{T}", f"ユーザー,Ünïcödé,3,{T}", f"e\u0301,é,2,{T}", f"مستخدم,👍🏽,5,{T}")
        },
        # ---- timestamps
        "ms_timestamps": {
            "data.csv": _csv(f"u1,i1,4,{T}000", f"u1,i2,4,{T}000000", f"u1,i3,4,{T}000000000",
                             "u1,i4,4,99999999999", f"u1,i5,4,{T}")  # fmt: skip
        },
        "future_timestamps": {
            "data.csv": _csv(f"u1,i1,4,{RUN_END_PLUS_SLACK - 1}", f"u1,i2,4,{RUN_END_PLUS_SLACK + 1}",
                             "u1,i3,4,4102444800", "u1,i4,4,2100-01-01T00:00:00Z", "u1,i5,4,2026-12-02T12:00:00Z",
                             f"u1,i6,4,{T}")  # fmt: skip
        },
        "bad_timestamps": {
            "data.csv": _csv("u1,i1,4,yesterday", "u1,i2,4,12.5", "u1,i3,4,2026-13-45", "u1,i4,4,", "u1,i5,4,1e9",
                             "u1,i6,4,   ", "u1,i7,4,2026-13-45T00:00:00", "u1,i8,4,-20")  # fmt: skip
        },
        # ---- duplicates
        "exact_duplicates": {"data.csv": _csv(ok, ok, f"u1,i1,4.0, {T}", f"u2,i1,3,{T}")},
        "conflicting_duplicates": {
            "data.csv": _csv(ok, f"u1,i1,2,{T}", f"u1,i1,5,{T}", f"u2,i1,5,{T + 500}", f"u2,i1,1,{T}")
        },
        # ---- blank lines: empty, spaces, a tab, a trailing one; a line of empty fields is not blank
        "blank_lines": {"data.csv": _csv(ok, "", "   ", f"u2,i2,3,{T}", "\t", "", f"u3,i3,5,{T}", ",,,", "")},
        # ---- degenerate but valid data
        "single_rating_user": {"data.csv": _csv(ok, f"u1,i2,3,{T}", f"u1,i3,5,{T}", f"u2,i1,2,{T}")},
        "lonely_item": {"data.csv": _csv(ok, f"u1,i2,3,{T}", f"u2,i1,5,{T}", f"u2,i2,2,{T}", f"u2,i9,1,{T}")},
        "all_equal_ratings": {"data.csv": _csv(*(f"u{k % 2},i{k},3,{T + k}" for k in range(4)))},
        "single_user": {"data.csv": _csv(*(f"u1,i{k},{k + 1},{T + k}" for k in range(4)))},
        # ---- paths
        "missing_path": {"README.txt": b"The test reads missing_path/nowhere.csv, which does not exist.\n"},
        "no_data_files": {
            "README.txt": b"No visible .csv file here: _SUCCESS and hidden files are skipped.\n",
            "_SUCCESS": b"",
            ".hidden.csv": _csv(ok),
        },
        "unreadable": {"data.csv": _csv(ok)},  # the test copies it to a temporary folder and makes it mode 000
    }


def main() -> None:
    if BAD.exists():
        shutil.rmtree(BAD)
    for case, files in cases().items():
        folder = BAD / case
        folder.mkdir(parents=True)
        for name, content in files.items():
            (folder / name).write_bytes(content)
    print(f"wrote {len(cases())} cases under {BAD}")


if __name__ == "__main__":
    main()
