"""The archive layout: schemas from the Avro files, partitions, which files count."""

from __future__ import annotations

import json
import re
from importlib import resources

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rendezvous.archive import layout
from rendezvous.archive.layout import ArchiveError, data_files, write_rows
from tests.unit.archive_data import score


@pytest.mark.parametrize("table", layout.TABLES)
def test_arrow_schema_follows_the_avro_file(table):
    avsc = json.loads(resources.files("schemas").joinpath("archive", f"{table}.avsc").read_text())
    schema = layout.arrow_schema(table)
    assert schema.names == [f["name"] for f in avsc["fields"]]
    for f in avsc["fields"]:
        optional = isinstance(f["type"], list) and "null" in f["type"]
        assert schema.field(f["name"]).nullable == optional, f["name"]


def test_arrow_types_map_avro_types():
    scores = layout.arrow_schema("scores")
    assert scores.field("received_ms").type == pa.int64()
    assert scores.field("late").type == pa.bool_()
    assert scores.field("output").type == pa.string()
    nested = layout.arrow_schema("decisions").field("scores").type
    assert pa.types.is_list(nested)
    assert nested.value_type.field("late").type == pa.bool_()
    assert nested.value_type.field("output").nullable
    assert not nested.value_type.field("model").nullable


def test_replay_has_the_score_columns_and_a_replay_id():
    replay = layout.arrow_schema("replay")
    assert replay.names == [*layout.arrow_schema("scores").names, "replay_id"]
    assert layout.columns("replay")[-4:] == ("replay_id", "service", "dt", "hr")


def test_write_rows_partitions_by_service_and_utc_date_and_hour(tmp_path):
    late_evening = 1_714_607_999_000  # 2024-05-01T23:59:59Z
    rows = [
        score("a", "gbm", "champion", "1", 5, service="credit"),
        score("b", "gbm", "champion", "1", 5, at=late_evening, service="credit"),
        score("c", "lr", "champion", "1", 5, service="fraud"),
    ]
    written = write_rows(tmp_path, "scores", rows)
    folders = sorted(p.parent.relative_to(tmp_path).as_posix() for p in written)
    assert folders == [
        "scores/service=credit/dt=2024-05-01/hr=10",
        "scores/service=credit/dt=2024-05-01/hr=23",
        "scores/service=fraud/dt=2024-05-01/hr=10",
    ]
    table = pq.read_table(written[0])
    assert table.schema.names == layout.arrow_schema("scores").names  # no partition columns
    assert table.column("request_id").to_pylist() in (["a"], ["b"], ["c"])


def test_write_rows_takes_the_service_as_an_argument(tmp_path):
    (path,) = write_rows(tmp_path, "scores", [score("a", "gbm", "champion", "1", 5)], service="s")
    assert path.parent.parent.parent.name == "service=s"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"colour": "red"}, "scores row 0: unknown field 'colour'; scores has request_id"),
        ({"model": None}, "scores row 0: field 'model' (string) is required"),
        ({"late": "yes"}, "scores rows do not match the table's schema"),
    ],
)
def test_write_rows_names_the_bad_field(tmp_path, row, message):
    with pytest.raises(ArchiveError, match=re.escape(message)):
        write_rows(
            tmp_path, "scores", [{**score("a", "m", "champion", "1", 5), **row}], service="s"
        )


def test_write_rows_needs_a_service(tmp_path):
    with pytest.raises(ArchiveError, match="no service; add a 'service' key or pass service="):
        write_rows(tmp_path, "scores", [score("a", "m", "champion", "1", 5)])


def test_unknown_table_is_refused(tmp_path):
    with pytest.raises(ArchiveError, match="unknown archive table 'score'; expected one of"):
        write_rows(tmp_path, "score", [])


def test_data_files_reads_parquet_and_part_files_and_skips_hidden_ones(tmp_path):
    (written,) = write_rows(tmp_path, "scores", [score("a", "m", "champion", "1", 5)], service="s")
    folder = written.parent
    flink_name = folder / "part-6c1e2f-0-0"
    written.rename(flink_name)
    (folder / "other.parquet").write_bytes(flink_name.read_bytes())
    for hidden in (".part-6c1e2f-0-1.inprogress.1234", "_SUCCESS", ".part-x.crc"):
        (folder / hidden).write_bytes(b"not parquet")
    (folder / "_temporary").mkdir()
    (folder / "_temporary" / "part-0.parquet").write_bytes(b"not parquet")
    (folder / "notes.txt").write_text("not data")
    (folder / "part-empty").write_bytes(b"")
    stray = tmp_path / "scores" / "service=s" / "part-misplaced.parquet"
    stray.write_bytes(b"x")

    found = data_files(tmp_path, "scores")
    assert found.files == (folder / "other.parquet", flink_name)
    assert found.ignored == (stray,)


def test_data_files_of_a_missing_table_is_empty(tmp_path):
    assert data_files(tmp_path / "nothing", "decisions") == layout.DataFiles((), ())
