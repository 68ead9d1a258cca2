"""Window graphs from one recording, vectorised: whole-recording numpy sorts and segment reductions, no per-window loop.

A window is W consecutive messages (by timestamp) starting every S messages; the trailing messages that cannot fill
a whole window belong to no window (the documented remainder: fewer than S messages, or a whole recording shorter
than W).
Nodes are the distinct CAN ids of a window; directed edges are the consecutive-message transitions id_t -> id_t+1,
deduplicated with counts. Every feature below is documented in docs/data.md; change one and bump FEATURE_VERSION.
No torch here: the graph cache converts the arrays to tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdgat_core.data.canonical import Messages

# Enters every graph cache key: bump it whenever a feature's definition changes.
FEATURE_VERSION = 3
# The first 15% of each recording's messages calibrate the per-vehicle baselines (an id's usual period, its share of
# traffic, the bus's usual message gap), as an IDS would learn a car's normal traffic when it starts watching it.
# Every hcrl_sa recording's first attack comes later (17-48% of the way in); an attack inside it would blunt them, so a
# training recording whose first 15% holds labelled attacks calibrates on its earliest attack-free stretch instead
# (calibration_range).
CALIBRATION_FRACTION = 0.15

NODE_FEATURES: tuple[str, ...] = (
    "count_frac",  # occurrences of the id in the window / W
    *(f"byte{k}_mean" for k in range(8)),  # mean of payload byte k / 255 (bytes beyond the DLC count as 0)
    "first_pos",  # first position of the id in the window / (W - 1)
    "last_pos",  # last position of the id in the window / (W - 1)
    "gap_mean",  # g(mean inter-arrival of the id), inter-arrival = time since the id's previous message
    "gap_std",  # g(standard deviation of that inter-arrival)
    "gap_rel_mean",  # mean of clip(log2(inter-arrival / the id's calibration period), +-10) / 10
    "gap_rel_std",  # standard deviation of the same log ratio / 10
    "payload_change",  # mean fraction of the 8 bytes that differ from the id's previous message
    "dlc_mean",  # mean DLC / 8
    "id_share",  # clip((log10(the id's share of the calibration messages) + 6) / 6, 0, 1); 0 if unseen
    "is_oov",  # 1 when the id is not in the training vocabulary
)
EDGE_FEATURES: tuple[str, ...] = (
    "count_frac",  # transitions src -> dst in the window / (W - 1)
    "gap_mean",  # g(mean time gap between the two messages of the transition)
    "gap_std",  # g(standard deviation of that gap)
    "first_pos",  # position of the first such transition / (W - 2)
    "last_pos",  # position of the last such transition / (W - 2)
    "gap_rel_mean",  # mean of clip(log2(gap / the calibration part's median message gap), +-10) / 10
)
# Features defined relative to the recording's own calibration part or to the window, not in absolute units or ids:
# they transfer to vehicles the training set never saw (see docs/data.md for the measured difference).
VEHICLE_NORMALISED_NODE_FEATURES: tuple[str, ...] = (
    "count_frac",
    "first_pos",
    "last_pos",
    "gap_rel_mean",
    "gap_rel_std",
    "payload_change",
    "id_share",
)
VEHICLE_NORMALISED_EDGE_FEATURES: tuple[str, ...] = ("count_frac", "first_pos", "last_pos", "gap_rel_mean")
GAP_UNIT_S = 1e-4  # g(dt) = log1p(dt / 0.1 ms) / log1p(1e4): 0 at 0, 1 at one second, smooth over 5 decades
_GAP_NORM = float(np.log1p(1.0 / GAP_UNIT_S))
_REL_CLIP = 10.0
OOV_INDEX = 0  # vocabulary index of every id unseen in training; known ids are 1..V


def gap_scale(dt: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(dt, 0.0) / GAP_UNIT_S) / _GAP_NORM


@dataclass
class WindowGraphs:
    """The graphs of one recording (or a concatenation of several) as flat arrays, CSR-style per graph."""

    x: np.ndarray  # float32 [N, len(NODE_FEATURES)]
    node_id: np.ndarray  # int64 [N] vocabulary index (OOV_INDEX for unseen ids)
    node_can_id: np.ndarray  # uint32 [N] raw CAN id
    node_ptr: np.ndarray  # int64 [G + 1]
    edge_index: np.ndarray  # int64 [2, E] node indices global to this object
    edge_attr: np.ndarray  # float32 [E, len(EDGE_FEATURES)]
    edge_ptr: np.ndarray  # int64 [G + 1]
    y: np.ndarray  # int64 [G] 1 if any message of the window is an attack
    attack_frac: np.ndarray  # float32 [G] share of attack messages in the window
    start: np.ndarray  # int64 [G] index (in the time-sorted recording) of the window's first message
    recording: np.ndarray  # int64 [G] index into a list of recording names

    @property
    def num_graphs(self) -> int:
        return int(self.y.shape[0])

    @staticmethod
    def concat(parts: list[WindowGraphs]) -> WindowGraphs:
        if not parts:
            return empty_graphs()
        node_off = np.cumsum([0] + [p.x.shape[0] for p in parts])
        edge_off = np.cumsum([0] + [p.edge_attr.shape[0] for p in parts])

        def ptrs(name: str, offs: np.ndarray) -> np.ndarray:
            return np.concatenate([[0]] + [getattr(p, name)[1:] + o for p, o in zip(parts, offs[:-1])]).astype(np.int64)

        return WindowGraphs(
            x=np.concatenate([p.x for p in parts]),
            node_id=np.concatenate([p.node_id for p in parts]),
            node_can_id=np.concatenate([p.node_can_id for p in parts]),
            node_ptr=ptrs("node_ptr", node_off),
            edge_index=np.concatenate([p.edge_index + o for p, o in zip(parts, node_off[:-1])], axis=1),
            edge_attr=np.concatenate([p.edge_attr for p in parts]),
            edge_ptr=ptrs("edge_ptr", edge_off),
            y=np.concatenate([p.y for p in parts]),
            attack_frac=np.concatenate([p.attack_frac for p in parts]),
            start=np.concatenate([p.start for p in parts]),
            recording=np.concatenate([p.recording for p in parts]),
        )


def empty_graphs() -> WindowGraphs:
    return WindowGraphs(
        x=np.zeros((0, len(NODE_FEATURES)), np.float32),
        node_id=np.zeros(0, np.int64),
        node_can_id=np.zeros(0, np.uint32),
        node_ptr=np.zeros(1, np.int64),
        edge_index=np.zeros((2, 0), np.int64),
        edge_attr=np.zeros((0, len(EDGE_FEATURES)), np.float32),
        edge_ptr=np.zeros(1, np.int64),
        y=np.zeros(0, np.int64),
        attack_frac=np.zeros(0, np.float32),
        start=np.zeros(0, np.int64),
        recording=np.zeros(0, np.int64),
    )


def window_starts(n: int, window: int, stride: int) -> np.ndarray:
    """First message index of every whole window; messages after the last whole window are the remainder."""
    if window < 2 or stride < 1:
        raise ValueError("window must be >= 2 and stride >= 1")
    if n < window:
        return np.zeros(0, np.int64)
    return np.arange(0, n - window + 1, stride, dtype=np.int64)


def vocab_index(vocab: np.ndarray, can_ids: np.ndarray) -> np.ndarray:
    """Raw CAN ids -> vocabulary index (1..V for the sorted training ids, OOV_INDEX for anything else)."""
    if vocab.size == 0:
        return np.full(can_ids.shape, OOV_INDEX, np.int64)
    pos = np.searchsorted(vocab, can_ids)
    pos_c = np.minimum(pos, vocab.size - 1)
    found = vocab[pos_c] == can_ids
    return np.where(found, pos_c + 1, OOV_INDEX).astype(np.int64)


@dataclass
class RecordingContext:
    """Per-message quantities that need the whole recording (the id's previous message, its usual period)."""

    gap_prev: np.ndarray  # float64 [n] time since the id's previous message (first one: since the recording began)
    gap_rel: np.ndarray  # float64 [n] clipped log2(gap_prev / id's median period); 0 where undefined
    changed: np.ndarray  # float32 [n] fraction of bytes differing from the id's previous message (first: 0)
    id_share: np.ndarray  # float64 [n] share of the calibration messages that carry this message's id
    msg_gap: np.ndarray  # float64 [n-1] time to the next message
    msg_gap_rel: np.ndarray  # float64 [n-1] clipped log2(msg_gap / median msg_gap)
    rank: np.ndarray  # int64 [n] rank of the message's id among the recording's distinct ids
    num_ids: int  # distinct ids in the recording
    period: np.ndarray  # float64 [num_ids] each id's calibration period (NaN: no repeat in the calibration part)
    ids: np.ndarray  # uint32 [num_ids] the recording's distinct ids (rank order)


def _log_ratio(num: np.ndarray, den: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log2(num / den)
    r = np.where(np.isfinite(r), r, np.where(np.isnan(r), 0.0, np.sign(r) * _REL_CLIP))
    return np.clip(r, -_REL_CLIP, _REL_CLIP)


def _small_int(a: np.ndarray, bound: int) -> np.ndarray:
    """The narrowest integer dtype for values < bound: numpy's stable sort is a radix sort on 16-bit keys."""
    if bound <= 1 << 16:
        return a.astype(np.uint16)
    return a.astype(np.int32 if bound < 1 << 31 else np.int64)


def id_ranks(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted distinct ids, each message's rank among them, count per distinct id); O(n) for ids < 65536."""
    if ids.size and int(ids.max()) < 1 << 16:
        counts = np.bincount(ids, minlength=1)
        present = np.flatnonzero(counts)
        lookup = np.zeros(counts.size, np.int64)
        lookup[present] = np.arange(present.size)
        return present.astype(np.uint32), lookup[ids], counts[present]
    uniq, rank, counts = np.unique(ids, return_inverse=True, return_counts=True)
    return uniq, rank, counts


_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)


def _bytes_differing(payload_sorted: np.ndarray) -> np.ndarray:
    """Per consecutive pair of rows of a uint8 [n, 8] array: how many of the 8 bytes differ (SWAR on uint64)."""
    words = np.ascontiguousarray(payload_sorted).view(np.uint64).ravel()
    x = words[1:] ^ words[:-1]
    # high bit of each byte set iff that byte of x is non-zero
    nonzero = ((x & _LOW7) + _LOW7 | x) & ~_LOW7
    return np.bitwise_count(nonzero)


def recording_context(m: Messages, calib: tuple[int, int] | None = None) -> RecordingContext:
    """`calib`: [lo, hi) of the messages that calibrate the baselines (default: the first calibration_size(n))."""
    n = len(m)
    ts = m.timestamp
    uniq, rank, counts = id_ranks(m.id)
    R = max(uniq.size, 1)
    by_id = np.argsort(_small_int(rank, R), kind="stable")  # grouped by id, time order inside each group
    r_sorted = rank[by_id]
    first_of_id = np.empty(n, bool)
    first_of_id[:1] = True
    first_of_id[1:] = r_sorted[1:] != r_sorted[:-1]
    ts_sorted = ts[by_id]
    gap_sorted = np.empty(n)
    gap_sorted[1:] = np.diff(ts_sorted)
    gap_sorted[first_of_id] = ts_sorted[first_of_id] - (ts[0] if n else 0.0)
    changed_sorted = np.zeros(n, np.float32)
    if n > 1:
        changed_sorted[1:] = _bytes_differing(m.payload[by_id]) / 8.0
    changed_sorted[first_of_id] = 0.0

    c_lo, c_hi = calib if calib is not None else (0, calibration_size(n))
    # the id's usual period: median of its gaps inside the calibration part (first occurrences excluded);
    # one sort of (id, gap) packed in a float
    period = np.full(R, np.nan)
    rep = ~first_of_id & (by_id >= c_lo) & (by_id < c_hi)
    if rep.any():
        g_r, g_v = r_sorted[rep], gap_sorted[rep]
        span = float(g_v.max()) * 2.0 + 1.0
        g_v = np.sort(g_r * span + g_v) - g_r * span  # g_r is already sorted, so it still labels the sorted gaps
        cnt = np.bincount(g_r, minlength=R)
        start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        has = cnt > 0
        lo = start[has] + (cnt[has] - 1) // 2
        hi = start[has] + cnt[has] // 2
        period[has] = 0.5 * (g_v[lo] + g_v[hi])
    rel_sorted = _log_ratio(gap_sorted, period[r_sorted])
    rel_sorted[first_of_id] = 0.0

    gap_prev = np.empty(n)
    gap_prev[by_id] = gap_sorted
    gap_rel = np.empty(n)
    gap_rel[by_id] = rel_sorted
    changed = np.empty(n, np.float32)
    changed[by_id] = changed_sorted
    msg_gap = np.diff(ts)
    gaps = msg_gap[c_lo : max(c_hi - 1, c_lo + 1)]
    med = float(np.median(gaps)) if gaps.size else 0.0
    msg_gap_rel = _log_ratio(msg_gap, med if med > 0 else np.nan)
    calib_share = np.bincount(rank[c_lo:c_hi], minlength=R) / max(c_hi - c_lo, 1)
    return RecordingContext(
        gap_prev, gap_rel, changed, calib_share[rank], msg_gap, msg_gap_rel, rank, R, period, uniq.astype(np.uint32)
    )


def calibration_size(n: int) -> int:
    """How many leading messages of an n-message recording calibrate its baselines."""
    return min(n, max(2, int(n * CALIBRATION_FRACTION)))


def calibration_range(n: int, label: np.ndarray | None = None, window: int = 2) -> tuple[tuple[int, int], str]:
    """[lo, hi) of the messages that calibrate an n-message recording, and why (CALIBRATION_RULES).

    Default: its first calibration_size(n) messages. With labels (training recordings only: test labels never steer
    a feature) and a labelled attack in that part: the earliest attack-free stretch of the same length; if none is
    that long, the longest attack-free stretch when it holds at least `window` messages; else the default part."""
    c = calibration_size(n)
    if label is None or n == 0 or not label[:c].any():
        return (0, c), CALIBRATION_RULES[0]
    attack = np.flatnonzero(label)
    lo = np.concatenate([[0], attack + 1])
    length = np.concatenate([attack, [n]]) - lo
    long_enough = np.flatnonzero(length >= c)
    if long_enough.size:
        start = int(lo[long_enough[0]])
        return (start, start + c), CALIBRATION_RULES[1]
    i = int(np.argmax(length))
    if length[i] >= window:
        return (int(lo[i]), int(lo[i] + length[i])), CALIBRATION_RULES[2]
    return (0, c), CALIBRATION_RULES[3]


# why a recording calibrates where it does (calibration_range); anything but the first is a dataset quirk, reported
CALIBRATION_RULES = ("first_part", "earliest_attack_free", "longest_attack_free", "attacked_no_fallback")


def _segment_mean(groups: np.ndarray, count: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
    """Per-group means of each value array (bincount: one pass, no sort)."""
    size = count.size
    return [np.bincount(groups, weights=v, minlength=size) / count for v in values]


def build_window_graphs(
    m: Messages,
    window: int,
    stride: int,
    vocab: np.ndarray,
    recording: int = 0,
    lo: int = 0,
    hi: int | None = None,
    ctx: RecordingContext | None = None,
) -> WindowGraphs:
    """Graphs of the windows lying entirely inside messages [lo, hi) of one time-sorted recording.

    Recording-wide context (previous message of an id, its usual period) is computed over the whole recording, so the
    train part and the validation tail of a recording see the same feature definitions.
    """
    n_all = len(m)
    hi = n_all if hi is None else hi
    starts = window_starts(hi - lo, window, stride) + lo
    G = starts.size
    if G == 0:
        return empty_graphs()
    ctx = ctx if ctx is not None else recording_context(m)
    W = window
    if stride == window:  # contiguous: slices instead of gathers
        sl = slice(int(starts[0]), int(starts[0]) + G * W)
        take = lambda a: a[sl]  # noqa: E731
        msg = np.arange(sl.start, sl.stop, dtype=np.int64)
    else:
        msg = (starts[:, None] + np.arange(W, dtype=np.int64)[None, :]).ravel()
        take = lambda a: a[msg]  # noqa: E731
    M = msg.size
    rank2d = _small_int(take(ctx.rank), ctx.num_ids).reshape(G, W)
    pos = np.broadcast_to(np.arange(W, dtype=np.int64), (G, W)).ravel()
    row_base = (np.arange(G, dtype=np.int64) * W)[:, None]

    # nodes: sort each window's messages by id (stable radix sort on 16-bit ranks), then cut into runs of one id
    perm = (np.argsort(rank2d, axis=1, kind="stable") + row_base).ravel()
    rank_sorted = rank2d.ravel()[perm]
    new_node = np.ones(M, bool)
    new_node[1:] = rank_sorted[1:] != rank_sorted[:-1]
    new_node[::W] = True  # a window always starts a new node
    node_start = np.flatnonzero(new_node)
    N = node_start.size
    node_count = np.diff(np.append(node_start, M))
    node_of_msg = np.empty(M, np.int64)
    node_of_msg[perm] = np.cumsum(new_node) - 1
    node_win = perm[node_start] // W
    node_ptr = np.zeros(G + 1, np.int64)
    np.cumsum(np.bincount(node_win, minlength=G), out=node_ptr[1:])
    node_can_id = take(m.id)[perm[node_start]]
    cnt = node_count.astype(np.float64)

    payload = take(m.payload)
    gap_p, rel_p = take(ctx.gap_prev), take(ctx.gap_rel)
    gap_mean, gap_sq, rel_mean, rel_sq, chg_mean, dlc_mean = _segment_mean(
        node_of_msg, cnt, gap_p, gap_p * gap_p, rel_p, rel_p * rel_p, take(ctx.changed), take(m.dlc)
    )
    x = np.empty((N, len(NODE_FEATURES)), np.float32)
    x[:, 0] = cnt / W
    for k in range(8):
        x[:, 1 + k] = np.bincount(node_of_msg, weights=payload[:, k], minlength=N) / (cnt * 255.0)
    x[:, 9] = pos[perm[node_start]] / (W - 1)
    x[:, 10] = pos[perm[node_start + node_count - 1]] / (W - 1)
    x[:, 11] = gap_scale(gap_mean)
    x[:, 12] = gap_scale(np.sqrt(np.maximum(gap_sq - gap_mean * gap_mean, 0.0)))
    x[:, 13] = rel_mean / _REL_CLIP
    x[:, 14] = np.sqrt(np.maximum(rel_sq - rel_mean * rel_mean, 0.0)) / _REL_CLIP
    x[:, 15] = chg_mean
    x[:, 16] = dlc_mean / 8.0
    share = take(ctx.id_share)[perm[node_start]]
    with np.errstate(divide="ignore"):
        x[:, 17] = np.clip((np.log10(share) + 6.0) / 6.0, 0.0, 1.0)
    node_id = vocab_index(vocab, node_can_id)
    x[:, 18] = node_id == OOV_INDEX

    # edges: transitions between consecutive messages of a window, deduplicated per (src node, dst node)
    nodes2d = node_of_msg.reshape(G, W)
    local = nodes2d - node_ptr[:-1, None]  # node index inside its window, < W
    ekey = _small_int(local[:, :-1] * W + local[:, 1:], W * W)
    eperm = (np.argsort(ekey, axis=1, kind="stable") + (np.arange(G, dtype=np.int64) * (W - 1))[:, None]).ravel()
    ek_sorted = ekey.ravel()[eperm]
    T = ek_sorted.size
    new_edge = np.ones(T, bool)
    new_edge[1:] = ek_sorted[1:] != ek_sorted[:-1]
    new_edge[:: W - 1] = True
    edge_start = np.flatnonzero(new_edge)
    E = edge_start.size
    edge_count = np.diff(np.append(edge_start, T))
    edge_of_t = np.empty(T, np.int64)
    edge_of_t[eperm] = np.cumsum(new_edge) - 1
    first_msg = msg.reshape(G, W)[:, :-1].ravel()  # recording index of each transition's first message
    tgap, trel = ctx.msg_gap[first_msg], ctx.msg_gap_rel[first_msg]
    ecnt = edge_count.astype(np.float64)
    tg_mean, tg_sq, tr_mean = _segment_mean(edge_of_t, ecnt, tgap, tgap * tgap, trel)
    tpos = eperm % (W - 1)
    edge_attr = np.empty((E, len(EDGE_FEATURES)), np.float32)
    edge_attr[:, 0] = ecnt / (W - 1)
    edge_attr[:, 1] = gap_scale(tg_mean)
    edge_attr[:, 2] = gap_scale(np.sqrt(np.maximum(tg_sq - tg_mean * tg_mean, 0.0)))
    denom = max(W - 2, 1)
    edge_attr[:, 3] = tpos[edge_start] / denom
    edge_attr[:, 4] = tpos[edge_start + edge_count - 1] / denom
    edge_attr[:, 5] = tr_mean / _REL_CLIP
    src_t = nodes2d[:, :-1].ravel()
    dst_t = nodes2d[:, 1:].ravel()
    first_t = eperm[edge_start]
    edge_win = first_t // (W - 1)
    edge_ptr = np.zeros(G + 1, np.int64)
    np.cumsum(np.bincount(edge_win, minlength=G), out=edge_ptr[1:])

    lab = take(m.label).reshape(G, W)
    return WindowGraphs(
        x=x,
        node_id=node_id,
        node_can_id=node_can_id.astype(np.uint32),
        node_ptr=node_ptr,
        edge_index=np.stack([src_t[first_t], dst_t[first_t]]),
        edge_attr=edge_attr,
        edge_ptr=edge_ptr,
        y=(lab.max(axis=1) > 0).astype(np.int64),
        attack_frac=lab.mean(axis=1, dtype=np.float64).astype(np.float32),
        start=starts,
        recording=np.full(G, recording, np.int64),
    )
