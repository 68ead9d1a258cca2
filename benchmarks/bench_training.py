"""Training throughput in window graphs per second, per model (VGAE, GAT, fusion DQN) and size (teacher, student).

    .venv/bin/python benchmarks/bench_training.py                         # real hcrl_sa if present, else synthetic
    .venv/bin/python benchmarks/bench_training.py --dataset synthetic --variant tiny --batches 5
    .venv/bin/python benchmarks/bench_training.py --device cuda --amp     # on a GPU machine (batched, pinned, AMP)

Each row: parameters, training graphs/s (forward + backward + optimizer step over batched graphs, after one warm-up
batch), inference graphs/s, and the seconds one epoch over the training split would take. A last line gives the
teacher/student speed ratio per architecture. Set --threads to compare torch CPU thread counts (oversubscribed shared
cores make 2 threads slower than 1; see docs/training.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=None, help="hcrl_sa (default when ../shared/data/hcrl_sa exists) or synthetic")
    ap.add_argument("--variant", default="", help="preset variant: '', cpu or tiny")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=10, help="timed training batches per model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bfloat16/float16 autocast on CUDA")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from kdgat_core.config import preset, resolve_data_root
    from kdgat_core.data import load_graphs
    from kdgat_core.models import CANGraphGAT, CANGraphVGAE, QNetwork, count_parameters
    from kdgat_core.stages.prerequisites import gat_kwargs, vgae_kwargs

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data_root = None
    dataset = args.dataset
    if dataset is None:
        dataset = "hcrl_sa" if (Path(resolve_data_root().value) / "hcrl_sa").is_dir() else "synthetic"
    if dataset == "synthetic":
        from kdgat_core.data.synthetic import write_dataset

        data_root = tempfile.mkdtemp(prefix="kdgat-bench-")
        write_dataset(data_root, "synthetic", seed=0, scale=4.0)
    suffix = f",{args.variant}" if args.variant else ""
    graphs = load_graphs(preset(f"gat,teacher{suffix}", dataset=dataset), data_root=data_root)
    n_train = len(graphs.train)
    pin = device.type == "cuda"
    print(
        f"dataset {dataset}: {n_train} training windows, {graphs.train.num_nodes / n_train:.1f} nodes and "
        f"{graphs.train.num_edges / n_train:.1f} edges per window; device {device}, threads {args.threads}, "
        f"batch {args.batch_size}{', AMP' if args.amp else ''}"
    )
    print(f"{'model':<14}{'params':>10}{'train g/s':>12}{'infer g/s':>12}{'epoch s':>10}")

    def batches(k: int):
        out = []
        for b in graphs.train.batches(args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)):
            out.append(b.pin_memory() if pin else b)
            if len(out) == k:
                break
        return out

    def timed(fn, items) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.amp and device.type == "cuda")
    speeds: dict[tuple[str, str], float] = {}
    work = batches(args.batches + 1)
    for arch in ("vgae", "gat", "dqn"):
        for size in ("teacher", "student"):
            cfg = preset(f"{arch},{size}{suffix}", dataset=dataset)
            if arch == "vgae":
                model = CANGraphVGAE(**vgae_kwargs(cfg, graphs)).to(device)
                loss_of = lambda b, m=model: m.loss(b)  # noqa: E731
                infer = lambda b, m=model: m.window_score(b)  # noqa: E731
            elif arch == "gat":
                model = CANGraphGAT(**gat_kwargs(cfg, graphs)).to(device)
                loss_of = lambda b, m=model: F.cross_entropy(m(b), b.y)  # noqa: E731
                infer = lambda b, m=model: m(b)  # noqa: E731
            else:
                model = QNetwork(10, cfg.dqn.hidden, cfg.dqn.layers, cfg.dqn.num_alphas).to(device)
                loss_of = lambda s, m=model: m(s.x).pow(2).mean()  # noqa: E731
                infer = lambda s, m=model: m(s.x)  # noqa: E731
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            items = work
            if arch == "dqn":  # the bandit's input is a state vector per window, not a graph
                from types import SimpleNamespace

                items = [
                    SimpleNamespace(x=torch.randn(cfg.dqn.batch_size, 10), num_graphs=cfg.dqn.batch_size)
                    for _ in range(args.batches + 1)
                ]

            def step(b):
                b = b.to(device, non_blocking=True) if hasattr(b, "to") else b
                with amp:
                    loss = loss_of(b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            @torch.no_grad()
            def predict(b):
                b = b.to(device, non_blocking=True) if hasattr(b, "to") else b
                with amp:
                    infer(b)

            model.train()
            step(items[0])  # warm-up
            graphs_timed = sum(b.num_graphs for b in items[1:])
            train_gps = graphs_timed / timed(step, items[1:])
            model.eval()
            infer_gps = graphs_timed / timed(predict, items[1:])
            speeds[(arch, size)] = train_gps
            epoch = n_train / train_gps if arch != "dqn" else float("nan")
            print(
                f"{arch + ',' + size:<14}{count_parameters(model):>10,}{train_gps:>12.0f}{infer_gps:>12.0f}{epoch:>10.1f}"
            )
    for arch in ("vgae", "gat", "dqn"):
        print(
            f"{arch}: student trains {speeds[(arch, 'student')] / speeds[(arch, 'teacher')]:.1f}x faster than teacher"
        )


if __name__ == "__main__":
    main()
