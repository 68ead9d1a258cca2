"""`kdgat synth`, `kdgat graphs`, `kdgat datasets`, `kdgat ingest` as a user runs them (real console script)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

KDGAT = str(Path(sys.executable).parent / "kdgat")


def kdgat(*args, cwd, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("KDGAT_DATA_ROOT", "KDGAT_CACHE_DIR")}
    env.update(env_extra or {})
    return subprocess.run([KDGAT, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def rows(stdout: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(stdout)))


def test_synth_then_graphs_builds_then_reads_the_cache(tmp_path):
    done = kdgat("synth", tmp_path / "root", "--scale", "0.3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 14 files" in done.stdout
    args = (
        "graphs",
        "synthetic",
        "--window",
        "50",
        "--data-root",
        tmp_path / "root",
        "--cache-dir",
        tmp_path / "cache",
        "-f",
        "csv",
    )
    first = kdgat(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    got = {r["split"]: r for r in rows(first.stdout)}
    assert list(got) == [
        "train",
        "val",
        "test_01_known_vehicle_known_attack",
        "test_02_unknown_vehicle_known_attack",
        "test_03_known_vehicle_unknown_attack",
        "test_04_unknown_vehicle_unknown_attack",
    ]
    assert {r["source"] for r in got.values()} == {"built"}
    assert int(got["train"]["graphs"]) > int(got["val"]["graphs"]) > 0
    assert int(got["test_01_known_vehicle_known_attack"]["attack_graphs"]) > 0
    assert "attack-free-a is identical to train_01_attack_free/attack-free-a: used once" in first.stderr
    again = kdgat(*args, cwd=tmp_path)
    assert {r["source"] for r in rows(again.stdout)} == {"cache"}
    assert [r["graphs"] for r in rows(again.stdout)] == [r["graphs"] for r in rows(first.stdout)]


def test_a_dataset_registered_in_kdgat_toml_works_without_code_changes(tmp_path):
    (tmp_path / "kdgat.toml").write_text(
        '[data]\nroot = "root"\n\n[datasets.my_car]\ntest_splits = ["test_01_known_vehicle_known_attack"]\n'
        'description = "our own captures"\n'
    )
    raw = tmp_path / "raw"
    assert kdgat("synth", raw, "--format", "candump", "--scale", "0.2", cwd=tmp_path).returncode == 0
    ingest = kdgat("ingest", "my_car", "--raw", raw, cwd=tmp_path)
    assert ingest.returncode == 0, ingest.stderr
    assert (tmp_path / "root" / "my_car" / "train_02_with_attacks__DoS-a.parquet").is_file()
    listed = kdgat("datasets", "my_car", "-f", "csv", cwd=tmp_path)
    (row,) = rows(listed.stdout)
    # the extra test splits on disk are reported, not hidden
    assert row["status"] == "ok" and row["splits"].startswith("3/3 (+test_02")
    graphs = kdgat("graphs", "my_car", "--window", "40", "--cache-dir", tmp_path / "cache", "-f", "csv", cwd=tmp_path)
    assert graphs.returncode == 0, graphs.stderr
    assert [r["split"] for r in rows(graphs.stdout)] == ["train", "val", "test_01_known_vehicle_known_attack"]


def test_bad_requests_are_one_sentence_and_exit_2(tmp_path):
    assert kdgat("synth", tmp_path / "root", "--scale", "0.1", cwd=tmp_path).returncode == 0
    for args, words in [
        (("graphs", "nope", "--data-root", tmp_path / "root"), "Unknown dataset 'nope'"),
        (("graphs", "synthetic", "--window", "1", "--data-root", tmp_path / "root"), "data.window must be at least 2"),
        (("graphs", "hcrl_ch", "--data-root", tmp_path / "root"), "does not exist"),
        (("datasets", "nope"), "Unknown dataset 'nope'"),
        (("ingest", "synthetic", "--raw", tmp_path / "root"), "No captures"),
    ]:
        done = kdgat(*args, cwd=tmp_path, env_extra={"KDGAT_CACHE_DIR": str(tmp_path / "cache")})
        assert done.returncode == 2, (args, done.stderr)
        assert words in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
