"""Window graphs: the vectorised builder equals a slow, obviously-correct pure-Python reference on small inputs."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from kdgat_core.data.canonical import Messages
from kdgat_core.data.windows import (
    CALIBRATION_FRACTION,
    EDGE_FEATURES,
    NODE_FEATURES,
    OOV_INDEX,
    build_window_graphs,
    vocab_index,
    window_starts,
)


def random_messages(n: int, seed: int, n_ids: int = 6) -> Messages:
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.array([0x000, 0x0A1, 0x123, 0x2B0, 0x316, 0x7FF, 0x43F, 0x5AA][:n_ids], np.uint32), size=n)
    gaps = rng.choice([0.0, 0.0002, 0.0005, 0.001, 0.003], size=n)  # includes equal timestamps
    ts = 1.5e9 + np.cumsum(gaps)
    dlc = rng.choice([8, 8, 8, 4, 2, 0], size=n).astype(np.uint8)
    payload = rng.integers(0, 4, size=(n, 8)).astype(np.uint8) * 60  # few values: repeats and changes both occur
    payload[np.arange(8)[None, :] >= dlc[:, None]] = 0
    label = (rng.random(n) < 0.1).astype(np.uint8)
    return Messages(ts, ids, payload, dlc, label)


# ----------------------------------------------------------------------------------------------------------------------
# the reference: one window at a time, plain Python, straight from the feature descriptions in docs/data.md
# ----------------------------------------------------------------------------------------------------------------------
def g(dt: float) -> float:
    return math.log1p(max(dt, 0.0) / 1e-4) / math.log1p(1e4)


def log_ratio(a: float, b: float) -> float:
    if b == 0:
        return 0.0 if a == 0 else 10.0
    if a == 0:
        return -10.0
    return max(-10.0, min(10.0, math.log2(a / b)))


def reference(m: Messages, W: int, S: int, vocab: list[int], lo: int = 0, hi: int | None = None):
    n = len(m)
    hi = n if hi is None else hi
    ts = m.timestamp.tolist()
    ids = [int(i) for i in m.id]
    pay = m.payload.tolist()
    last_seen: dict[int, int] = {}
    gap_prev, changed, first = [], [], []
    for i in range(n):
        j = last_seen.get(ids[i])
        first.append(j is None)
        gap_prev.append(ts[i] - ts[0] if j is None else ts[i] - ts[j])
        changed.append(0.0 if j is None else sum(a != b for a, b in zip(pay[i], pay[j])) / 8)
        last_seen[ids[i]] = i
    calib = min(n, max(2, int(n * 0.15)))  # the leading messages that calibrate the baselines
    periods = {}
    for c in set(ids):
        gaps = [gap_prev[i] for i in range(calib) if ids[i] == c and not first[i]]
        periods[c] = statistics.median(gaps) if gaps else None
    rel = [0.0 if first[i] or periods[ids[i]] is None else log_ratio(gap_prev[i], periods[ids[i]]) for i in range(n)]
    msg_gaps = [ts[i + 1] - ts[i] for i in range(n - 1)]
    med = statistics.median(msg_gaps[: max(calib - 1, 1)])
    graphs = []
    s = lo
    while s + W <= hi:
        win = list(range(s, s + W))
        nodes = sorted(set(ids[i] for i in win))
        feats = []
        for c in nodes:
            occ = [i for i in win if ids[i] == c]
            gp = [gap_prev[i] for i in occ]
            rl = [rel[i] for i in occ]
            share = ids[:calib].count(c) / calib
            feats.append(
                [
                    len(occ) / W,
                    *[statistics.mean(pay[i][k] for i in occ) / 255 for k in range(8)],
                    (occ[0] - s) / (W - 1),
                    (occ[-1] - s) / (W - 1),
                    g(statistics.mean(gp)),
                    g(statistics.pstdev(gp)),
                    statistics.mean(rl) / 10,
                    statistics.pstdev(rl) / 10,
                    statistics.mean(changed[i] for i in occ),
                    statistics.mean(int(m.dlc[i]) for i in occ) / 8,
                    min(1.0, max(0.0, (math.log10(share) + 6) / 6)) if share else 0.0,
                    0.0 if c in vocab else 1.0,
                ]
            )
        pairs: dict[tuple[int, int], list[int]] = {}
        for t in range(W - 1):
            pairs.setdefault((nodes.index(ids[s + t]), nodes.index(ids[s + t + 1])), []).append(t)
        edges, efeats = [], []
        for (a, b), ts_ in sorted(pairs.items()):
            gaps = [msg_gaps[s + t] for t in ts_]
            edges.append((a, b))
            efeats.append(
                [
                    len(ts_) / (W - 1),
                    g(statistics.mean(gaps)),
                    g(statistics.pstdev(gaps)),
                    ts_[0] / max(W - 2, 1),
                    ts_[-1] / max(W - 2, 1),
                    statistics.mean(0.0 if med <= 0 else log_ratio(x, med) for x in gaps) / 10,
                ]
            )
        labels = [int(m.label[i]) for i in win]
        graphs.append(
            dict(start=s, nodes=nodes, x=feats, edges=edges, e=efeats, y=int(any(labels)), frac=sum(labels) / W)
        )
        s += S
    return graphs


def graph(out, k):
    n0, n1 = out.node_ptr[k], out.node_ptr[k + 1]
    e0, e1 = out.edge_ptr[k], out.edge_ptr[k + 1]
    return out.node_can_id[n0:n1], out.x[n0:n1], out.edge_index[:, e0:e1] - n0, out.edge_attr[e0:e1], out.node_id[n0:n1]


@pytest.mark.parametrize("window,stride,seed", [(7, 7, 0), (7, 3, 1), (10, 10, 2), (5, 1, 3), (2, 2, 4)])
def test_vectorised_graphs_equal_the_reference(window, stride, seed):
    m = random_messages(83, seed)
    m.id[:6] = m.id[0]  # so some ids never appear in the calibration part (the first 12 messages)
    vocab = [0x0A1, 0x123, 0x316]
    out = build_window_graphs(m, window, stride, np.array(vocab, np.uint32))
    ref = reference(m, window, stride, vocab)
    assert out.num_graphs == len(ref) > 0
    assert out.x.shape[1] == len(NODE_FEATURES) and out.edge_attr.shape[1] == len(EDGE_FEATURES)
    for k, r in enumerate(ref):
        can_ids, x, ei, ea, node_id = graph(out, k)
        assert can_ids.tolist() == r["nodes"]
        np.testing.assert_allclose(x, np.array(r["x"]), rtol=1e-5, atol=1e-5)
        assert [tuple(p) for p in ei.T.tolist()] == r["edges"]
        np.testing.assert_allclose(ea, np.array(r["e"]), rtol=1e-5, atol=1e-5)
        assert out.y[k] == r["y"] and out.attack_frac[k] == pytest.approx(r["frac"])
        assert out.start[k] == r["start"]
        assert [int(i) for i in node_id] == [vocab.index(c) + 1 if c in vocab else OOV_INDEX for c in r["nodes"]]


def test_calibration_fraction_is_the_documented_one():
    assert CALIBRATION_FRACTION == 0.15  # the reference above hard-codes it; docs/data.md quotes it


def test_a_part_of_a_recording_keeps_recording_wide_context():
    m = random_messages(120, 5)
    out = build_window_graphs(m, 8, 8, np.zeros(0, np.uint32), lo=50, hi=110)
    ref = reference(m, 8, 8, [], lo=50, hi=110)
    assert out.num_graphs == len(ref) == 7
    for k, r in enumerate(ref):
        np.testing.assert_allclose(graph(out, k)[1], np.array(r["x"]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(graph(out, k)[3], np.array(r["e"]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,window", [(100, 10), (105, 10), (9, 10), (10, 10), (1001, 100)])
def test_every_message_is_in_exactly_one_window_or_the_trailing_remainder(n, window):
    m = random_messages(n, 7)
    out = build_window_graphs(m, window, window, np.zeros(0, np.uint32))
    counts = np.zeros(n, int)
    for s in out.start:
        counts[s : s + window] += 1
    whole = (n // window) * window
    assert (counts[:whole] == 1).all()
    assert (counts[whole:] == 0).all() and n - whole < window  # the remainder: fewer than W trailing messages
    # node occurrence counts add up to the window in every graph
    per_graph = np.add.reduceat(out.x[:, 0] * window, out.node_ptr[:-1]) if out.num_graphs else []
    np.testing.assert_allclose(per_graph, window)


def test_window_label_is_one_when_any_message_is_an_attack():
    m = random_messages(40, 8)
    m.label[:] = 0
    m.label[13] = 1
    out = build_window_graphs(m, 10, 10, np.zeros(0, np.uint32))
    assert out.y.tolist() == [0, 1, 0, 0]
    assert out.attack_frac.tolist() == pytest.approx([0, 0.1, 0, 0])


def test_unseen_ids_map_to_the_one_oov_index():
    vocab = np.array([5, 9, 300], np.uint32)
    got = vocab_index(vocab, np.array([9, 4, 300, 1000, 5, 0], np.uint32))
    assert got.tolist() == [2, OOV_INDEX, 3, OOV_INDEX, 1, OOV_INDEX]
    assert vocab_index(np.zeros(0, np.uint32), np.array([1, 2], np.uint32)).tolist() == [OOV_INDEX, OOV_INDEX]


def test_window_starts_rejects_nonsense_and_covers_the_recording():
    assert window_starts(25, 10, 5).tolist() == [0, 5, 10, 15]
    assert window_starts(5, 10, 10).size == 0
    with pytest.raises(ValueError):
        window_starts(10, 1, 1)
