"""The whole pipeline in one process: teacher, student and distilled student through all four stages, then the
results table (stage x size x KD x scenario) in markdown.

    python -m kdgat_core.stages.pipeline --dataset hcrl_sa --variant cpu --tracking-uri sqlite:///mlflow.db

Each stage is one tracked run, exactly as `kdgat run` would make it. Wall and CPU seconds are printed per stage:
on a machine whose cores are shared, CPU seconds (one torch thread) are what the same work takes on idle cores.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from kdgat_core.config import (
    ATTACK_SHARE,
    PIPELINE_ORDER,
    STAGE_ARCH,
    TIMING_SCORE,
    Metric,
    Stage,
    preset,
    scenario_metric,
)

ROLES: tuple[tuple[str, bool], ...] = (("teacher", False), ("student", False), ("student", True))
TABLE_MODELS = ((Stage.AUTOENCODER, "vgae"), (Stage.CURRICULUM, "gat"), (Stage.FUSION, None))
# published KD-GAT figures (F1, accuracy) per scenario, where known (issue 15 / docs/training.md)
PUBLISHED = {
    "test_02_unknown_vehicle_known_attack": (0.577, 0.405),
    "test_03_known_vehicle_unknown_attack": (0.696, 0.824),
    "test_04_unknown_vehicle_unknown_attack": (0.563, 0.392),
}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_pipeline(
    dataset: str,
    variant: str = "",
    tracking_uri: str | None = None,
    data_root: str | None = None,
    overrides: list[str] | None = None,
    log: Callable[[str], object] = print,
) -> dict[str, Any]:
    from kdgat_core.stages import run_stage

    results: dict[tuple[str, bool, str], Any] = {}
    timings = []
    started, cpu0 = time.perf_counter(), cpu_seconds()
    for size, kd in ROLES:
        for stage in PIPELINE_ORDER:
            name = f"{STAGE_ARCH[stage]},{size}" + (f",{variant}" if variant else "")
            cfg = preset(name, dataset=dataset).override(overrides or [])
            cfg.kd.enabled = kd
            t0, c0 = time.perf_counter(), cpu_seconds()
            res = run_stage(cfg, tracking_uri=tracking_uri, data_root=data_root)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            results[(size, kd, stage.value)] = res
            timings.append((cfg.run_name, res.run_id, wall, cpu))
            log(
                f"{cfg.run_name:<40} {res.run_id}  wall {wall:7.1f} s  cpu {cpu:7.1f} s  f1 {res.metrics.get('f1', float('nan')):.4f}"
            )
    total_wall, total_cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    log(f"total: wall {total_wall:.0f} s, cpu {total_cpu:.0f} s")
    return {"results": results, "timings": timings, "wall": total_wall, "cpu": total_cpu}


def _cell(v: float | None) -> str:
    """A table cell: an undefined or unknown figure (no attack window in the scenario) is said, not printed as 0."""
    return "n/a" if v is None or v != v else f"{v:.3f}"


def results_table(results: dict[tuple[str, bool, str], Any], scenarios: list[str]) -> str:
    """Markdown: the published figure and the trivial answers, then one row per (model, size, KD), F1 / accuracy per
    test scenario, from the evaluation runs (the timing score: no parameters, one row per evaluation run)."""
    head = "| model | size | KD | params | " + " | ".join(f"{s[:7]} F1 / acc" for s in scenarios) + " |"
    lines = [head, "|" + "---|" * (4 + len(scenarios))]
    first = results[(ROLES[0][0], ROLES[0][1], Stage.EVALUATION.value)].metrics
    share = [first.get(scenario_metric(s, ATTACK_SHARE)) for s in scenarios]
    published = [PUBLISHED.get(s, (None, None)) for s in scenarios]
    lines.append(
        "| published KD-GAT fusion | | | | " + " | ".join(f"{_cell(f)} / {_cell(a)}" for f, a in published) + " |"
    )
    all_attack = [(None, None) if p is None else (2 * p / (1 + p) if p > 0 else None, p) for p in share]
    all_normal = [(None, None) if p is None else (0.0 if p > 0 else None, 1 - p) for p in share]
    for label, trivial in (("everything an attack", all_attack), ("everything normal", all_normal)):
        lines.append(f"| {label} | | | | " + " | ".join(f"{_cell(f)} / {_cell(a)}" for f, a in trivial) + " |")
    for size, kd in ROLES:
        ev = results[(size, kd, Stage.EVALUATION.value)].metrics
        rows: list[tuple[str, Stage | None, str | None]] = [
            (f"{stage} ({STAGE_ARCH[stage]})", stage, prefix) for stage, prefix in TABLE_MODELS
        ]
        if any(scenario_metric(s, f"{TIMING_SCORE}_accuracy") in ev for s in scenarios):
            rows.insert(2, (f"{TIMING_SCORE} score", None, TIMING_SCORE))
        for label, stage, prefix in rows:
            params = results[(size, kd, stage.value)].metrics.get(Metric.NUM_PARAMETERS.value) if stage else None
            cells: list[str] = []
            for s in scenarios:
                f1 = ev.get(scenario_metric(s, f"{prefix}_f1" if prefix else "f1"))
                acc = ev.get(scenario_metric(s, f"{prefix}_accuracy" if prefix else "accuracy"))
                cells.append(f"{_cell(f1)} / {_cell(acc)}")
            lines.append(
                f"| {label} | {size} | {'yes' if kd else 'no'} | {int(params) if params else ''} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="hcrl_sa")
    ap.add_argument("--variant", default="cpu", help="preset variant: cpu, tiny, or '' for the published sizes")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("-O", "--override", action="append", default=[], help="key=value, applied to every stage")
    args = ap.parse_args(argv)
    import logging

    from kdgat_core.config import KdgatError, resolve_tracking_uri

    logging.basicConfig(level=logging.WARNING)
    try:
        out = run_pipeline(
            args.dataset, args.variant, resolve_tracking_uri(args.tracking_uri).value, args.data_root, args.override
        )
    except KdgatError as exc:
        print(f"kdgat: {exc}", file=sys.stderr)
        sys.exit(2)
    ev = out["results"][("teacher", False, Stage.EVALUATION.value)].metrics
    scenarios = sorted({k.split("/", 1)[0] for k in ev if "/" in k})
    print()
    print(results_table(out["results"], scenarios))


if __name__ == "__main__":
    main()
