"""The ingest stage function on a seven-row CSV: every row accepted or rejected with its reason."""

from __future__ import annotations

from datetime import date

import pytest
from stagekit import T0, stage_io

from reelrank import columns as C
from reelrank.runstate import RunFailed
from reelrank.stages import ingest as stage

pytestmark = pytest.mark.spark
DAY = date(2030, 1, 1)


def _csv(tmp_path, lines: list[str]) -> str:
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id,rating,timestamp\n" + "".join(f"{line}\n" for line in lines))
    return str(path)


def test_rows_are_accepted_or_rejected_with_a_reason(spark, cfg, tmp_path):
    good = [f"u{u},i{i},{1 + (u + i) % 5},{T0 + u * 10 + i}" for u, i in ((1, 1), (1, 2), (2, 1), (2, 3), (3, 2))]
    path = _csv(tmp_path, [*good, "u4,i1,9,1700000100", good[0]])  # out of the 1..5 scale; an exact duplicate
    run_cfg = cfg.replace(source={"kind": "csv", "input": path}, ingest={"max_rejected_share": 0.5})
    io = stage_io(spark, run_cfg, "ingest", DAY)
    result = stage.run(io, run_cfg)
    assert set(result.outputs) == set(stage.STAGE.outputs)
    assert result.rows == 5 and result.detail.startswith("input 7 = accepted 5 + rejected 2 (")
    accepted = result.outputs["accepted"]
    assert sorted((r[C.USER], r[C.ITEM], r[C.RATING]) for r in accepted.collect()) == sorted(
        (f"u{u}", f"i{i}", float(1 + (u + i) % 5)) for u, i in ((1, 1), (1, 2), (2, 1), (2, 3), (3, 2)))
    reasons = sorted(r[C.REASON] for r in result.outputs["rejected_interactions"].collect())
    assert len(reasons) == 2 and "duplicate" in reasons and reasons != ["duplicate", "duplicate"]
    assert result.outputs["raw_items"].count() == 0  # a csv source brings no item metadata


def test_no_valid_row_fails_the_run(spark, cfg, tmp_path):
    path = _csv(tmp_path, ["u1,i1,9,1700000000", "u2,i1,0,1700000001"])
    run_cfg = cfg.replace(source={"kind": "csv", "input": path}, ingest={"max_rejected_share": 1.0})
    with pytest.raises(RunFailed, match="no valid interactions among 2 input rows"):
        stage.run(stage_io(spark, run_cfg, "ingest", DAY), run_cfg)
