"""Synthetic CAN traffic: deterministic, periodic, and with attacks that look like the published ones."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from kdgat_core.config import TEST_SPLITS_BASE, TRAIN_SPLITS, KdgatError
from kdgat_core.data.canonical import list_recordings
from kdgat_core.data.synthetic import (
    DOS_ID,
    dataset_tables,
    generate_recording,
    vehicles,
    write_dataset,
)


@pytest.fixture(scope="module")
def tables():
    return dataset_tables(seed=0)


def cols(table):
    return (
        table["timestamp"].to_numpy(),
        table["id"].to_numpy(),
        table["label"].to_numpy(),
        table["data_field"].to_pylist(),
    )


def test_same_seed_same_bytes_other_seed_other_traffic(tmp_path):
    a = write_dataset(tmp_path / "a", seed=4, scale=0.2)
    b = write_dataset(tmp_path / "b", seed=4, scale=0.2)
    c = write_dataset(tmp_path / "c", seed=5, scale=0.2)
    names = [r.path.name for r in list_recordings(a)]
    assert names == [r.path.name for r in list_recordings(b)]
    for n in names:
        assert pq.read_table(a / n).equals(pq.read_table(b / n))
    assert not pq.read_table(a / names[0]).equals(pq.read_table(c / names[0]))


def test_layout_size_and_scale(tables, tmp_path):
    splits = {s for s, _ in tables}
    assert splits == set(TRAIN_SPLITS) | set(TEST_SPLITS_BASE)
    total = sum(t.num_rows for t in tables.values())
    assert 20_000 <= total <= 60_000
    bigger = sum(t.num_rows for t in dataset_tables(seed=0, scale=2.0).values())
    assert bigger == pytest.approx(2 * total, rel=0.1)
    with pytest.raises(KdgatError):
        dataset_tables(scale=0)


def test_normal_traffic_is_periodic_with_own_periods_and_sorted(tables):
    ts, ids, label, _ = cols(tables[(TRAIN_SPLITS[0], "attack-free-a")])
    assert (np.diff(ts) >= 0).all() and label.sum() == 0
    car = vehicles(0)["a"]
    fast = car.periods <= 0.2
    assert fast.sum() >= 10 and len(set(car.periods.tolist())) >= 4
    for can_id, period in zip(car.ids[fast], car.periods[fast]):
        gaps = np.diff(ts[ids == can_id])
        assert np.median(gaps) == pytest.approx(period, rel=0.05)
        assert gaps.std() > 0  # jitter


def test_attacks_are_injected_like_the_real_ones(tables):
    car_a = vehicles(0)["a"]
    ts, ids, label, data = cols(tables[(TRAIN_SPLITS[1], "DoS-a")])
    dos = label == 1
    assert (ids[dos] == DOS_ID).all() and np.median(np.diff(ts[dos])) == pytest.approx(0.0003, abs=0.00005)
    assert all(d == "00" * 8 for d, y in zip(data, label) if y)

    ts, ids, label, _ = cols(tables[(TEST_SPLITS_BASE[0], "fuzzing-a")])
    fz = label == 1
    assert np.median(np.diff(ts[fz])) == pytest.approx(0.0005, abs=0.0001)
    assert len(set(ids[fz].tolist())) > 500 and not set(ids[fz].tolist()) <= set(car_a.ids.tolist())

    car_b = vehicles(0)["b"]
    ts, ids, label, data = cols(tables[(TEST_SPLITS_BASE[2], "spoofing-b")])
    sp = label == 1
    assert len(set(ids[sp].tolist())) == 1 and int(ids[sp][0]) in car_b.ids.tolist()
    assert np.median(np.diff(ts[sp])) == pytest.approx(0.001, abs=0.0002)
    assert len({d for d, y in zip(data, label) if y}) == 1

    # malfunction: one legitimate id's payload goes wrong at its normal timing
    ts, ids, label, data = cols(tables[(TEST_SPLITS_BASE[2], "malfunction-a")])
    mf = label == 1
    assert mf.sum() > 20 and len(set(ids[mf].tolist())) == 1
    victim = ids[mf][0]
    normal_gaps = np.diff(ts[ids == victim])
    assert np.median(normal_gaps) == pytest.approx(car_a.periods[list(car_a.ids).index(victim)], rel=0.05)
    assert all(d.startswith("FF") for d, y in zip(data, label) if y)


def test_unknown_vehicle_has_other_ids_and_periods(tables):
    cars = vehicles(0)
    known = set(cars["a"].ids.tolist()) | set(cars["b"].ids.tolist())
    unknown = set(cars["c"].ids.tolist())
    assert len(unknown & known) <= len(unknown) // 4
    _, ids, label, _ = cols(tables[(TEST_SPLITS_BASE[1], "DoS-c")])
    assert set(ids[label == 0].tolist()) == unknown


def test_train_02_repeats_the_attack_free_drives_byte_for_byte(tables):
    for rec in ("attack-free-a", "attack-free-b"):
        a, b = tables[(TRAIN_SPLITS[0], rec)], tables[(TRAIN_SPLITS[1], rec)]
        assert a.drop(["source_file"]).equals(b.drop(["source_file"]))


def test_unknown_attack_name_is_an_error():
    with pytest.raises(KdgatError, match="Unknown synthetic attack"):
        generate_recording(vehicles(0)["a"], "teleport", 1.0, 0, "x.csv")
