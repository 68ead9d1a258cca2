"""load_graphs on synthetic data: splits, vocabulary and OOV, temporal validation, dedupe, batches, cache behaviour."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from kdgat_core.config import TEST_SPLITS_BASE, KdgatError, PipelineConfig
from kdgat_core.data import graph_cache, load_graphs
from kdgat_core.data.canonical import list_recordings, read_messages
from kdgat_core.data.synthetic import write_dataset
from kdgat_core.data.windows import NODE_FEATURES, OOV_INDEX


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_root")
    write_dataset(root, seed=3, scale=0.6)
    return root


def cfg(window=50, stride=None, val_fraction=0.25, max_messages=0) -> PipelineConfig:
    c = PipelineConfig(dataset="synthetic")
    c.data.window, c.data.stride = window, stride or window
    c.data.val_fraction, c.data.max_messages = val_fraction, max_messages
    return c


@pytest.fixture(scope="module")
def graphs(data_root, tmp_path_factory):
    return load_graphs(cfg(), data_root=data_root, cache_dir=tmp_path_factory.mktemp("cache"))


def test_splits_dimensions_and_duplicate_recordings_used_once(graphs):
    assert set(graphs.test) == set(TEST_SPLITS_BASE)
    assert graphs.node_feature_dim == len(NODE_FEATURES) == graphs.train.x.shape[1]
    assert graphs.edge_feature_dim == graphs.train.edge_attr.shape[1]
    # train_02 repeats train_01's two attack-free drives: each is used once
    assert sorted(graphs.duplicates) == ["train_02_with_attacks/attack-free-a", "train_02_with_attacks/attack-free-b"]
    assert not any(r.startswith("train_02_with_attacks/attack-free") for r in graphs.train.recording)
    assert {"train_01_attack_free/attack-free-a", "train_02_with_attacks/DoS-a"} <= set(graphs.train.recording)
    assert 0 < int(graphs.train.y.sum()) < len(graphs.train)
    for gs in (graphs.train, graphs.val, *graphs.test.values()):
        assert gs.y.dtype == torch.long and gs.y.shape == (len(gs),) and len(gs.recording) == len(gs)
        assert ((gs.attack_frac > 0) == (gs.y == 1)).all()


def test_validation_is_the_temporal_tail_without_overlap(graphs):
    W = graphs.window
    train_rec, val_rec = graphs.train.recording, graphs.val.recording
    for rec in set(val_rec):
        train_ends = [int(s) + W for s, r in zip(graphs.train.start, train_rec) if r == rec]
        val_starts = [int(s) for s, r in zip(graphs.val.start, val_rec) if r == rec]
        assert train_ends and val_starts
        assert max(train_ends) <= min(val_starts)  # no message of a validation window is in a training window
    assert len(graphs.val) == pytest.approx(len(graphs.train) / 3, rel=0.2)


def test_vocabulary_comes_from_training_and_unseen_ids_are_oov(graphs, data_root):
    folder = data_root / "synthetic"
    train_ids = set()
    for r in list_recordings(folder):
        if r.split.startswith("train"):
            train_ids |= set(read_messages(r.path).id.tolist())
    assert graphs.vocab.tolist() == sorted(train_ids)
    assert graphs.num_ids == len(train_ids) + 1
    unknown = graphs.test["test_02_unknown_vehicle_known_attack"]
    oov = unknown.node_id == OOV_INDEX
    assert oov.any() and (unknown.node_id < graphs.num_ids).all()
    is_oov_col = NODE_FEATURES.index("is_oov")
    assert torch.equal(unknown.x[:, is_oov_col] == 1, oov)
    assert (graphs.train.node_id != OOV_INDEX).all()


def test_batches_carry_whole_graphs_with_offsets(graphs):
    gs = graphs.test["test_01_known_vehicle_known_attack"]
    idx = torch.tensor([5, 2, 9, 3])
    b = gs.batch(idx)
    assert b.num_graphs == 4 and b.y.tolist() == gs.y[idx].tolist()
    assert b.ptr.tolist()[-1] == b.x.shape[0] == b.node_id.shape[0] == b.batch.shape[0]
    for k, g in enumerate(idx.tolist()):
        n0, n1 = int(gs.node_ptr[g]), int(gs.node_ptr[g + 1])
        e0, e1 = int(gs.edge_ptr[g]), int(gs.edge_ptr[g + 1])
        sel = b.batch == k
        assert torch.equal(b.x[sel], gs.x[n0:n1]) and torch.equal(b.node_id[sel], gs.node_id[n0:n1])
        emask = sel[b.edge_index[0]]
        assert torch.equal(b.edge_index[:, emask] - int(b.ptr[k]), gs.edge_index[:, e0:e1] - n0)
        assert torch.equal(b.edge_attr[emask], gs.edge_attr[e0:e1])
    # edges never cross graphs
    assert torch.equal(b.batch[b.edge_index[0]], b.batch[b.edge_index[1]])
    # a consecutive run (the fast slicing path) equals the same graphs gathered
    run, gathered = gs.batch(torch.arange(3, 8)), gs.batch(torch.tensor([3, 4, 5, 6, 7, 3])[:-1])
    assert torch.equal(run.x, gathered.x) and torch.equal(run.edge_index, gathered.edge_index)


def test_an_epoch_of_shuffled_batches_covers_every_graph_once_and_is_reproducible(graphs):
    gs = graphs.train

    def epoch(seed):
        return [b.y.tolist() for b in gs.batches(16, shuffle=True, generator=torch.Generator().manual_seed(seed))]

    a, b = epoch(1), epoch(1)
    assert a == b
    assert sum(len(x) for x in a) == len(gs)
    assert sorted(sum(a, [])) == sorted(gs.y.tolist())
    chosen = list(gs.batches(8, indices=[0, 1, 2]))
    assert len(chosen) == 1 and chosen[0].num_graphs == 3
    sub = gs.subset([4, 1])
    assert len(sub) == 2 and torch.equal(sub.batch([0]).x, gs.batch([4]).x)


def test_cache_is_reused_and_rebuilt_when_anything_it_depends_on_changes(data_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_graphs(cfg(max_messages=800), data_root=data_root, cache_dir=cache)
    assert all(s > 0 for s in first.build_seconds.values())
    again = load_graphs(cfg(max_messages=800), data_root=data_root, cache_dir=cache)
    assert all(s == 0 for s in again.build_seconds.values())
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.val.y, first.val.y)

    other_window = load_graphs(cfg(window=40, max_messages=800), data_root=data_root, cache_dir=cache)
    assert all(s > 0 for s in other_window.build_seconds.values()) and other_window.window == 40

    monkeypatch.setattr(graph_cache, "FEATURE_VERSION", 999)
    bumped = load_graphs(cfg(max_messages=800), data_root=data_root, cache_dir=cache)
    assert all(s > 0 for s in bumped.build_seconds.values())
    monkeypatch.undo()

    # a source file rewritten (same size even) invalidates the parts that read it
    victim = next(r for r in list_recordings(data_root / "synthetic") if r.split == TEST_SPLITS_BASE[0])
    st = victim.path.stat()
    os.utime(victim.path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        touched = load_graphs(cfg(max_messages=800), data_root=data_root, cache_dir=cache)
        assert touched.build_seconds[TEST_SPLITS_BASE[0]] > 0
        assert touched.build_seconds["train"] == 0 and touched.build_seconds[TEST_SPLITS_BASE[1]] == 0
    finally:
        os.utime(victim.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not list(cache.rglob("*.tmp"))


def test_a_damaged_cache_file_is_rebuilt_not_trusted(data_root, tmp_path):
    cache = tmp_path / "cache"
    load_graphs(cfg(max_messages=600), data_root=data_root, cache_dir=cache)
    for f in (cache / "synthetic").glob("train_*.pt"):
        f.write_bytes(f.read_bytes()[:100])
    g = load_graphs(cfg(max_messages=600), data_root=data_root, cache_dir=cache)
    assert g.build_seconds["train"] > 0 and len(g.train) > 0


def test_a_crash_while_writing_the_cache_leaves_no_file(data_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"

    def boom(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(graph_cache.torch, "save", boom)
    with pytest.raises(OSError):
        load_graphs(cfg(max_messages=600), data_root=data_root, cache_dir=cache)
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_bad_settings_and_missing_data_are_one_sentence_errors(data_root, tmp_path):
    with pytest.raises(KdgatError, match="window"):
        load_graphs(cfg(window=1), data_root=data_root, cache_dir=tmp_path)
    with pytest.raises(KdgatError, match="val_fraction"):
        load_graphs(cfg(val_fraction=1.0), data_root=data_root, cache_dir=tmp_path)
    with pytest.raises(KdgatError, match="does not exist"):
        load_graphs(cfg(), data_root=tmp_path / "nowhere", cache_dir=tmp_path)
    bad = PipelineConfig(dataset="no_such_dataset")
    with pytest.raises(KdgatError, match="Unknown dataset"):
        load_graphs(bad, data_root=data_root, cache_dir=tmp_path)


def test_overlapping_windows_and_max_messages(data_root, tmp_path):
    g = load_graphs(cfg(window=20, stride=5, max_messages=400), data_root=data_root, cache_dir=tmp_path)
    starts = g.test[TEST_SPLITS_BASE[0]].start
    rec = g.test[TEST_SPLITS_BASE[0]].recording_index
    first = starts[rec == 0]
    assert (np.diff(first.numpy()) == 5).all() and int(first.max()) + 20 <= 400
