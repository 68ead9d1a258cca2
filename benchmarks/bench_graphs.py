"""Graph-building throughput on real data: canonical parquet -> the window graphs a training loop consumes.

    .venv/bin/python benchmarks/bench_graphs.py [--data-root ../shared/data] [--dataset hcrl_sa] [--window 100]

Builds every split from scratch (empty temporary cache), then walks one shuffled epoch of training batches, and
prints messages/s, graphs/s, peak RSS and the ratio to the public reference implementation (pandas chunks plus a
Python loop per window), measured on this 2-core machine at about 24,000 messages/s and 550 MB peak.
Targets: at least 1,000,000 messages/s (40x) end to end, peak memory under 1 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time

REFERENCE_MSGS_PER_S = 24_000
TARGET_MSGS_PER_S = 1_000_000
TARGET_PEAK_MB = 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=None, help="dataset root (default: as kdgat resolves it)")
    ap.add_argument("--dataset", default="hcrl_sa")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--stride", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="builds to time; the best is reported (shared machine)")
    ap.add_argument(
        "--probe",
        action="store_true",
        help="also fit a logistic regression on pooled graph features per feature set and print F1 per "
        "split: how much signal the features carry, before any GNN",
    )
    args = ap.parse_args()

    t_import = time.perf_counter()
    import pyarrow.parquet as pq
    import torch
    import torch_geometric.data  # noqa: F401  (imported by the first batch; kept out of the timed part)

    from kdgat_core.config import PipelineConfig
    from kdgat_core.data.canonical import list_recordings
    from kdgat_core.data.graph_cache import dataset_dir, load_graphs

    import_s = time.perf_counter() - t_import
    rss_after_import = peak_rss_mb()

    cfg = PipelineConfig(dataset=args.dataset)
    cfg.data.window = args.window
    cfg.data.stride = args.stride or args.window
    folder = dataset_dir(args.dataset, args.data_root)
    recs = list_recordings(folder)
    messages = sum(pq.read_metadata(r.path).num_rows for r in recs)

    builds = []
    g = None
    for _ in range(max(1, args.repeat)):
        del g  # hold one build at a time, as a training job does
        with tempfile.TemporaryDirectory(prefix="kdgat-bench-") as cache:
            t0, c0 = time.perf_counter(), time.process_time()
            g = load_graphs(cfg, data_root=args.data_root, cache_dir=cache)
            build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
            t1 = time.perf_counter()
            cached = load_graphs(cfg, data_root=args.data_root, cache_dir=cache)
            cached_s = time.perf_counter() - t1
        builds.append((build_s, cached_s, build_cpu))
        del cached
    build_s, cached_s, build_cpu = min(builds)
    parts = [g.train, g.val, *g.test.values()]
    graphs = sum(len(p) for p in parts)

    t2 = time.perf_counter()
    seen = 0
    for batch in g.train.batches(args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)):
        seen += batch.num_graphs
    epoch_s = time.perf_counter() - t2
    assert seen == len(g.train)

    msgs_per_s = messages / build_s
    end_to_end_s = build_s + epoch_s
    e2e_msgs_per_s = messages / end_to_end_s
    peak = peak_rss_mb()
    print(f"dataset            {args.dataset} ({folder}), {len(recs)} recordings, {messages:,} messages")
    print(f"window / stride    {cfg.data.window} / {cfg.data.stride}; torch threads {torch.get_num_threads()}")
    print(
        f"graphs             {graphs:,} (train {len(g.train):,}, val {len(g.val):,}, "
        + ", ".join(f"{k.split('_')[0]}_{k.split('_')[1]} {len(v):,}" for k, v in g.test.items())
        + ")"
    )
    print(
        f"build (parquet -> cached graph tensors, all splits), best of {len(builds)}: {build_s:.2f} s"
        f"  [{', '.join(f'{b[0]:.2f}' for b in builds)}]; CPU time {build_cpu:.2f} s"
    )
    print(
        f"  messages/s       {msgs_per_s:,.0f}   ({msgs_per_s / REFERENCE_MSGS_PER_S:.1f}x the reference's "
        f"{REFERENCE_MSGS_PER_S:,}/s; target {TARGET_MSGS_PER_S:,}/s = 40x)"
    )
    print(f"  graphs/s         {graphs / build_s:,.0f}")
    print(
        f"  per CPU-second   {messages / build_cpu:,.0f} messages ({messages / build_cpu / REFERENCE_MSGS_PER_S:.1f}x): "
        f"the wall-clock rate when the machine is not shared with other work"
    )
    print(
        f"one shuffled training epoch of batches (batch {args.batch_size}): {epoch_s:.2f} s, "
        f"{len(g.train) / epoch_s:,.0f} graphs/s"
    )
    print(
        f"end to end (build + one epoch of batches): {end_to_end_s:.2f} s = {e2e_msgs_per_s:,.0f} messages/s "
        f"({e2e_msgs_per_s / REFERENCE_MSGS_PER_S:.1f}x the reference)"
    )
    print(f"reading the graph cache instead: {cached_s:.2f} s ({messages / cached_s:,.0f} messages/s)")
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[0]
    print(f"machine load       {load} (1-minute load average; wall times on a shared machine vary with it)")
    print(
        f"peak RSS           {peak:,.0f} MB (of which {rss_after_import:,.0f} MB is Python + torch + pyg after import "
        f"in {import_s:.1f} s); target < {TARGET_PEAK_MB} MB; reference 550 MB"
    )
    if args.probe:
        probe(g)
    ok = e2e_msgs_per_s >= TARGET_MSGS_PER_S and peak < TARGET_PEAK_MB
    print("targets            " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


def probe(g) -> None:
    """Logistic regression on mean/max/min-pooled node features plus mean edge features of each window graph."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from kdgat_core.data.windows import (
        EDGE_FEATURES,
        NODE_FEATURES,
        VEHICLE_NORMALISED_EDGE_FEATURES,
        VEHICLE_NORMALISED_NODE_FEATURES,
    )

    def pooled(gs, node_cols, edge_cols):
        ni = [NODE_FEATURES.index(c) for c in node_cols]
        ei = [EDGE_FEATURES.index(c) for c in edge_cols]
        x, ptr = gs.x.numpy()[:, ni], gs.node_ptr.numpy()
        ea, eptr = gs.edge_attr.numpy()[:, ei], gs.edge_ptr.numpy()
        return np.hstack(
            [
                np.add.reduceat(x, ptr[:-1]) / np.diff(ptr)[:, None],
                np.maximum.reduceat(x, ptr[:-1]),
                np.minimum.reduceat(x, ptr[:-1]),
                np.add.reduceat(ea, eptr[:-1]) / np.diff(eptr)[:, None],
            ]
        )

    no_share = tuple(c for c in VEHICLE_NORMALISED_NODE_FEATURES if c != "id_share")
    sets = {
        "all features": (NODE_FEATURES, EDGE_FEATURES),
        "vehicle-normalised": (VEHICLE_NORMALISED_NODE_FEATURES, VEHICLE_NORMALISED_EDGE_FEATURES),
        "vehicle-normalised minus id_share": (no_share, VEHICLE_NORMALISED_EDGE_FEATURES),
    }
    print("probe: logistic regression on pooled window features, F1 per split")
    for name, (nc, ec) in sets.items():
        clf = LogisticRegression(max_iter=3000).fit(pooled(g.train, nc, ec), g.train.y.numpy())
        scores = [f"val {f1_score(g.val.y.numpy(), clf.predict(pooled(g.val, nc, ec))):.3f}"]
        scores += [f"{k[:7]} {f1_score(v.y.numpy(), clf.predict(pooled(v, nc, ec))):.3f}" for k, v in g.test.items()]
        print(f"  {name:<34} " + "  ".join(scores))


if __name__ == "__main__":
    sys.exit(main())
