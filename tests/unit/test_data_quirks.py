"""Dataset quirks of the can-train-and-test sets, each reproduced on a tiny synthetic dataset: a scenario with no
attack, a missing or empty scenario, a recording with no message, attacks under 1% of messages, timestamps going
backwards, labelled attacks in a calibration part, the same recording in a training and a test split; and the
synthetic subtle attacks injected into validation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from kdgat_core.config import PipelineConfig, dataset_spec
from kdgat_core.data import load_graphs
from kdgat_core.data.canonical import read_messages, recording_file_name, write_parquet_atomic
from kdgat_core.data.catalog import dataset_summary
from kdgat_core.data.injection import FAMILIES, inject_tail
from kdgat_core.data.synthetic import BASE_DURATION_S, generate_recording, vehicles, write_dataset
from kdgat_core.data.windows import build_window_graphs, calibration_range, calibration_size, recording_context

SET = "set_01"  # built in with test_05_suppress and test_06_masquerade
TEST_01, TEST_05 = "test_01_known_vehicle_known_attack", "test_05_suppress"


def cfg(window: int = 50) -> PipelineConfig:
    c = PipelineConfig(dataset=SET)
    c.data.window = c.data.stride = window
    c.data.val_fraction = 0.25
    return c


def _put(folder, split: str, name: str, table: pa.Table) -> None:
    write_parquet_atomic(table, folder / recording_file_name(split, name))


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    """set_01 from the synthetic generator, plus: test_05_suppress without any attack, an empty recording in
    test_01, a test_01 recording identical to a training one; test_06_masquerade missing altogether."""
    root = tmp_path_factory.mktemp("quirky")
    folder = write_dataset(root, SET, seed=1, scale=0.6)
    car_a = vehicles(1)["a"]
    _put(folder, TEST_05, "suppress-a", generate_recording(car_a, None, BASE_DURATION_S * 0.6, 5, "x", "s"))
    empty = generate_recording(car_a, None, BASE_DURATION_S * 0.6, 1, "x", "e").slice(0, 0)
    _put(folder, TEST_01, "empty", empty)
    twin = pa.parquet.read_table(folder / recording_file_name("train_01_attack_free", "attack-free-a"))
    _put(folder, TEST_01, "copy-of-training", twin)
    graphs = load_graphs(cfg(), data_root=root, cache_dir=root / "cache")
    return root, folder, graphs


def test_a_scenario_without_attacks_is_loaded_and_a_missing_one_is_said(quirky):
    _, _, g = quirky
    assert len(g.test[TEST_05]) > 0 and int(g.test[TEST_05].y.sum()) == 0
    assert "test_06_masquerade" in g.missing_splits and TEST_05 not in g.missing_splits
    assert any("test_06_masquerade" in n for n in g.notes())


def test_an_empty_recording_is_reported_not_taken_for_a_duplicate(quirky):
    _, _, g = quirky
    assert f"{TEST_01}/empty" in g.empty
    assert f"{TEST_01}/empty" not in g.duplicates
    assert any("no message" in n for n in g.notes())


def test_a_test_recording_equal_to_a_training_one_is_never_used_on_both_sides(quirky):
    root, folder, g = quirky
    assert g.shared == {f"{TEST_01}/copy-of-training": "train_01_attack_free/attack-free-a"}
    assert f"{TEST_01}/copy-of-training" not in g.test[TEST_01].recordings
    spec = dataset_spec(SET)
    row = dataset_summary(SET, folder, spec.splits, spec.train_splits)  # what `kdgat datasets` prints
    assert row["shared_train_test"] == 1 and row["empty_recordings"] == 1
    assert row["calibration_attacks"] >= 1  # the synthetic floods start inside the first 15% of the messages


def test_one_attack_frame_makes_its_window_an_attack_window():
    m = read_messages_from(generate_recording(vehicles(0)["a"], None, 3.0, 0, "x", "n"))
    m.label = np.zeros(len(m), np.uint8)
    m.label[1234] = 1  # far under 1% of the messages
    g = build_window_graphs(m, 100, 100, np.unique(m.id))
    hit = 1234 // 100
    assert g.y[hit] == 1 and g.attack_frac[hit] == pytest.approx(0.01)
    assert g.y.sum() == 1


def read_messages_from(table: pa.Table):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "r.parquet"
    write_parquet_atomic(table, path)
    return read_messages(path)


def test_timestamps_going_backwards_give_the_graphs_of_the_sorted_recording():
    table = generate_recording(vehicles(0)["b"], "DoS", 1.0, 0, "x", "t")
    rng = np.random.default_rng(0)
    shuffled = table.take(pa.array(rng.permutation(table.num_rows)))
    a, b = read_messages_from(table), read_messages_from(shuffled)
    assert not (np.diff(shuffled.column("timestamp").to_numpy()) >= 0).all()
    ga = build_window_graphs(a, 50, 50, np.unique(a.id))
    gb = build_window_graphs(b, 50, 50, np.unique(b.id))
    np.testing.assert_array_equal(ga.y, gb.y)
    np.testing.assert_allclose(ga.x[:, 0], gb.x[:, 0])  # counts per id per window: same windows


def test_a_calibration_part_holding_labelled_attacks_moves_to_an_attack_free_stretch():
    n, w = 10_000, 50
    label = np.zeros(n, np.uint8)
    assert calibration_range(n, label, w) == ((0, calibration_size(n)), "first_part")
    label[100:400] = 1  # an attack from the start
    (lo, hi), rule = calibration_range(n, label, w)
    assert rule == "earliest_attack_free" and lo == 400 and hi - lo == calibration_size(n)
    label[:] = 1
    label[5000:5100] = 0  # only a short attack-free stretch
    assert calibration_range(n, label, w) == ((5000, 5100), "longest_attack_free")
    label[:] = 1
    assert calibration_range(n, label, w)[1] == "attacked_no_fallback"


def test_the_synthetic_training_recordings_with_early_attacks_are_calibrated_off_them(quirky):
    _, _, g = quirky
    # the synthetic DoS flood puts labelled attacks inside the first 15% of the messages
    assert g.calibration_rule.get("train_02_with_attacks/DoS-a") in ("earliest_attack_free", "longest_attack_free")
    lo, hi = g.train.calibration["train_02_with_attacks/DoS-a"]
    assert lo > 0 and hi > lo
    # test labels steer nothing: a test recording keeps its first part, and its labelled share is only reported
    assert all(v[0] == 0 for v in g.test[TEST_01].calibration.values())


def test_injected_validation_attacks_are_labelled_and_follow_the_fixed_families():
    m = read_messages_from(generate_recording(vehicles(0)["a"], None, 6.0, 0, "x", "inj"))
    ctx = recording_context(m)
    cut = int(len(m) * 0.8)
    seen = set()
    for first in range(len(FAMILIES)):
        inj = inject_tail(m, ctx, cut, 50, seed=0, name="inj", first=first)
        assert inj.bursts
        im = inj.messages
        np.testing.assert_array_equal(im.timestamp[:cut], m.timestamp[:cut])  # the training part is untouched
        assert (np.diff(im.timestamp) >= 0).all()
        assert (im.label.astype(bool) == (inj.family > 0) | inj.original_attack).all()
        seen |= {b[0] for b in inj.bursts}
        # same seed, same injections
        again = inject_tail(m, ctx, cut, 50, seed=0, name="inj", first=first)
        np.testing.assert_array_equal(again.messages.payload, im.payload)
    assert seen == set(FAMILIES)


def test_load_graphs_adds_injected_attack_windows_to_validation(quirky):
    _, _, g = quirky
    assert g.val_injected is not None and len(g.val_injected) > 0
    assert (g.val_injected.y == 1).all() and len(g.val_injected_family) == len(g.val_injected)
    assert set(np.unique(g.val_injected_family)) <= set(range(1, len(FAMILIES) + 1))
