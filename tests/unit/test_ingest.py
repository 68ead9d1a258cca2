"""Ingest: synthetic -> each raw format -> ingest -> parquet equals the generator's table; bad input; atomic writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kdgat_core.config import KdgatError
from kdgat_core.data import canonical
from kdgat_core.data.canonical import CANONICAL_SCHEMA
from kdgat_core.data.ingest import ingest
from kdgat_core.data.synthetic import RAW_EXTENSIONS, RAW_FORMATS, dataset_tables, write_raw_dataset

SCALE = 0.3


@pytest.fixture(scope="module")
def tables():
    return dataset_tables(seed=1, scale=SCALE)


@pytest.mark.parametrize("fmt", RAW_FORMATS)
def test_round_trip_through_each_raw_format_equals_the_generator(fmt, tables, tmp_path):
    raw = write_raw_dataset(tmp_path / "raw", fmt, seed=1, scale=SCALE)
    results = ingest("synthetic", raw, tmp_path / "root")
    assert {r.format for r in results} == {fmt} and all(r.skipped == 0 for r in results)
    assert len(results) == len(tables)
    for (split, rec), expected in tables.items():
        got = pq.read_table(tmp_path / "root" / "synthetic" / f"{split}__{rec}.parquet")
        assert got.schema.remove_metadata() == CANONICAL_SCHEMA
        assert got.drop(["source_file"]).equals(expected.drop(["source_file"]))
        assert set(got.column("source_file").to_pylist()) == {f"{split}/{rec}.{RAW_EXTENSIONS[fmt]}"}


def test_ingest_is_idempotent(tmp_path):
    raw = write_raw_dataset(tmp_path / "raw", "csv", seed=1, scale=0.1)
    first = ingest("synthetic", raw, tmp_path / "root")
    stamps = {r.output: r.output.stat().st_mtime_ns for r in first}
    second = ingest("synthetic", raw, tmp_path / "root")
    assert {r.status for r in second} == {"up to date"}
    assert {r.output: r.output.stat().st_mtime_ns for r in second} == stamps
    assert [r.messages for r in second] == [r.messages for r in first]
    forced = ingest("synthetic", raw, tmp_path / "root", force=True)
    assert {r.status for r in forced} == {"written"}


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


CTT_OK = "timestamp,arbitration_id,data_field,attack\n"


def test_the_layout_variants_users_have_are_read(tmp_path):
    write(
        tmp_path / "raw/test_01_known_vehicle_known_attack/a.csv",
        CTT_OK + "1.5,0x1A0,00 11 22 33,0\n1.6,1a0,,1\n\n1.7,7FF,FFFFFFFFFFFFFFFF,1\n",
    )
    write(
        tmp_path / "raw/train_01_attack_free/b.csv",
        "1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R\n1478198376.389636,018f,2,fe,5b,T\n"
        "1478198376.389800,0000,0,R\n",
    )
    write(
        tmp_path / "raw/train_01_attack_free/normal.txt",
        "Timestamp: 1479121434.850202        ID: 0350    000    DLC: 8    05 28 84 66 6d 00 00 a2\n",
    )
    write(
        tmp_path / "raw/train_02_with_attacks/c.log",
        "(1698232894.363802) can0 153#208010FF00FFB05E\n(1698232894.363900) vcan0 12345678#\n"
        "(1698232894.364000) can0 0F0#R\n(1698232894.364100) can1 1A1##1DEADBEEF\n",
    )
    results = {r.recording: r for r in ingest("synthetic", tmp_path / "raw", tmp_path / "root")}
    folder = tmp_path / "root" / "synthetic"
    a = pq.read_table(folder / "test_01_known_vehicle_known_attack__a.parquet").to_pylist()
    assert [(r["id"], r["data_field"], r["label"]) for r in a] == [
        (0x1A0, "00112233", 0),
        (0x1A0, "", 1),
        (0x7FF, "FFFFFFFFFFFFFFFF", 1),
    ]
    b = pq.read_table(folder / "train_01_attack_free__b.parquet").to_pylist()
    assert [(r["id"], r["data_field"], r["label"]) for r in b] == [
        (0x316, "052168092121006F", 0),
        (0x18F, "FE5B", 1),
        (0, "", 0),
    ]
    assert b[0]["timestamp"] == 1478198376.389427
    n = pq.read_table(folder / "train_01_attack_free__normal.parquet").to_pylist()
    assert [(r["id"], r["data_field"]) for r in n] == [(0x350, "052884666D0000A2")]
    c = pq.read_table(folder / "train_02_with_attacks__c.parquet").to_pylist()
    assert [(r["id"], r["data_field"], r["label"]) for r in c] == [
        (0x153, "208010FF00FFB05E", 0),
        (0x12345678, "", 0),
        (0x0F0, "", 0),
        (0x1A1, "DEADBEEF", 0),
    ]
    assert results["c"].format == "candump" and results["b"].format == "hcrl" and results["a"].format == "csv"


def test_candump_labels_come_from_a_sidecar_or_the_label_flag(tmp_path):
    log = write(
        tmp_path / "raw/test_01_known_vehicle_known_attack/x.log",
        "(1.000001) can0 100#00\n(1.000002) can0 000#0000000000000000\n",
    )
    ingest("synthetic", tmp_path / "raw", tmp_path / "flag", label=1)
    assert pq.read_table(tmp_path / "flag/synthetic/test_01_known_vehicle_known_attack__x.parquet")[
        "label"
    ].to_pylist() == [1, 1]
    write(log.with_name("x.log.labels"), "0\n1\n")
    ingest("synthetic", tmp_path / "raw", tmp_path / "side")
    assert pq.read_table(tmp_path / "side/synthetic/test_01_known_vehicle_known_attack__x.parquet")[
        "label"
    ].to_pylist() == [0, 1]
    write(log.with_name("x.log.labels"), "0\n")
    with pytest.raises(KdgatError, match="1 labels for 2 frame lines"):
        ingest("synthetic", tmp_path / "raw", tmp_path / "bad")


MALFORMED = {
    "non-hex id": ("1.0,0xZZ1,00,0\n", "CAN id '0xZZ1' is not hexadecimal"),
    "wrong column count": ("1.0,100,00\n", "expected 4 comma-separated columns, found 3"),
    "NaN timestamp": ("nan,100,00,0\n", "timestamp 'nan' is not a finite number"),
    "odd payload": ("1.0,100,ABC,0\n", "payload 'ABC' is not whole hexadecimal bytes"),
    "bad label": ("1.0,100,00,2\n", "label '2' is not one of 0, 1"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_lines_are_named_counted_and_skipped_or_fatal_with_strict(case, tmp_path):
    bad, reason = MALFORMED[case]
    write(tmp_path / "raw/train_01_attack_free/r.csv", CTT_OK + "1.0,100,00,0\n" + bad + "2.0,101,01,1\n")
    (res,) = ingest("synthetic", tmp_path / "raw", tmp_path / "root")
    assert res.messages == 2 and res.skipped == 1
    assert res.problems == [f"train_01_attack_free/r.csv:3: {reason}"]
    with pytest.raises(KdgatError, match=f"train_01_attack_free/r.csv:3: {reason}"):
        ingest("synthetic", tmp_path / "raw", tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").rglob("*.parquet"))


def test_hcrl_dlc_that_disagrees_with_the_bytes_is_malformed(tmp_path):
    write(
        tmp_path / "raw/train_01_attack_free/h.csv",
        "1.0,0316,8,05,21,68,09,21,21,00,6f,R\n1.1,0316,8,05,21,68,R\n1.2,0316,2,05,21,R\n",
    )
    (res,) = ingest("synthetic", tmp_path / "raw", tmp_path / "root")
    assert res.messages == 2 and res.problems == ["train_01_attack_free/h.csv:2: DLC 8 disagrees with the 3 data bytes"]


def test_empty_files_missing_folders_unknown_datasets_fail_clearly(tmp_path):
    write(tmp_path / "raw/train_01_attack_free/empty.csv", "")
    write(tmp_path / "raw/train_01_attack_free/ok.csv", CTT_OK + "1.0,100,00,0\n")
    results = {r.recording: r for r in ingest("synthetic", tmp_path / "raw", tmp_path / "root")}
    assert results["empty"].status == "skipped (empty)" and results["ok"].messages == 1
    with pytest.raises(KdgatError, match="empty.csv is empty"):
        ingest("synthetic", tmp_path / "raw", tmp_path / "root2", strict=True)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(KdgatError, match="No captures"):
        ingest("synthetic", tmp_path / "nothing", tmp_path / "root")
    with pytest.raises(KdgatError, match="does not exist"):
        ingest("synthetic", tmp_path / "missing", tmp_path / "root")
    with pytest.raises(KdgatError, match="Unknown dataset 'nope'"):
        ingest("nope", tmp_path / "raw", tmp_path / "root")
    write(tmp_path / "flat/loose.csv", CTT_OK + "1.0,100,00,0\n")
    with pytest.raises(KdgatError, match="not inside a split folder"):
        ingest("synthetic", tmp_path / "flat", tmp_path / "root")
    assert ingest("synthetic", tmp_path / "flat", tmp_path / "root", split="train_01_attack_free")[0].messages == 1
    write(tmp_path / "allbad/train_01_attack_free/x.csv", CTT_OK + "zz,1,2,3\n")
    with pytest.raises(KdgatError, match="no readable CAN messages"):
        ingest("synthetic", tmp_path / "allbad", tmp_path / "root")


def test_a_crash_while_writing_leaves_no_half_written_parquet(tmp_path, monkeypatch):
    write(tmp_path / "raw/train_01_attack_free/r.csv", CTT_OK + "1.0,100,00,0\n")

    def crash(table, where, **kw):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(canonical.pq, "write_table", crash)
    with pytest.raises(OSError):
        ingest("synthetic", tmp_path / "raw", tmp_path / "root")
    assert [p for p in (tmp_path / "root").rglob("*") if p.is_file()] == []


def test_kdgat_ingest_and_datasets_on_the_command_line(tmp_path):
    raw = write_raw_dataset(tmp_path / "raw", "candump", seed=2, scale=0.1)
    env = {**os.environ, "KDGAT_DATA_ROOT": str(tmp_path / "root")}
    kdgat = str(Path(sys.executable).parent / "kdgat")
    run = lambda *a: subprocess.run([kdgat, *a], env=env, capture_output=True, text=True, cwd=tmp_path)  # noqa: E731
    done = run("ingest", "synthetic", "--raw", str(raw))
    assert done.returncode == 0, done.stderr
    assert "messages from 14 captures" in done.stderr and "DoS-a" in done.stdout
    listed = run("datasets", "synthetic", "--format", "csv")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.strip().splitlines()
    fields = dict(zip(header.split(","), row.split(",")))
    assert fields["status"] == "ok" and fields["recordings"] == "14" and fields["duplicates"] == "2"
    bad = run("ingest", "synthetic", "--raw", str(tmp_path / "absent"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr
