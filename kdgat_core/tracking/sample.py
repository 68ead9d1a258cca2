"""A realistic tracking DB written through `open_run` (not trained): the demo's and the reader tests' fixture.

For each dataset and seed: teacher, student and KD-student runs of every stage, with per-epoch histories
(train_loss, val_loss, val_f1, lr), final metrics, per-test-scenario evaluation metrics, a learning-rate sweep,
one failed run and one deleted run. Values are synthetic but consistent (f1 from precision and recall, KD students
between plain students and teachers), and reproducible from rng_seed.

    python -m kdgat_core.tracking.sample --tracking-uri sqlite:///demo.db
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass, field

from kdgat_core.config import (
    PIPELINE_ORDER,
    Metric,
    ModelSize,
    PipelineConfig,
    Stage,
    dataset_spec,
    preset,
    scenario_metric,
)
from kdgat_core.tracking.run import TrackedRun, open_run
from kdgat_core.tracking.store import get_store, with_retry

# How good each dataset, stage and model is, roughly as in the published results.
DATASET_BASE_F1 = {
    "hcrl_sa": 0.965,
    "hcrl_ch": 0.985,
    "set_01": 0.915,
    "set_02": 0.9,
    "set_03": 0.89,
    "set_04": 0.905,
    "synthetic": 0.93,
}
STAGE_F1_OFFSET = {Stage.AUTOENCODER: -0.12, Stage.CURRICULUM: 0.0, Stage.FUSION: 0.012, Stage.EVALUATION: 0.012}
SIZE_KD_F1_OFFSET = {
    (ModelSize.TEACHER, False): 0.0,
    (ModelSize.STUDENT, False): -0.045,
    (ModelSize.STUDENT, True): -0.015,
}
# Unknown vehicles and unknown attacks are harder; suppress/masquerade (set_0x only) harder still.
SCENARIO_F1_OFFSET = {
    "test_01": 0.01,
    "test_02": -0.03,
    "test_03": -0.06,
    "test_04": -0.09,
    "test_05": -0.11,
    "test_06": -0.13,
}
SWEEP_LRS = (1e-4, 3e-4, 3e-3)
FAILED_ERROR = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 39.39 GiB total capacity)"


@dataclass
class SampleRuns:
    """What write_sample_runs wrote, for tests and the demo."""

    tracking_uri: str
    run_ids: list[str] = field(default_factory=list)  # every run written, including failed and deleted
    teachers: dict[tuple[str, int, str], str] = field(default_factory=dict)  # (dataset, seed, stage) -> run id
    kd_students: dict[tuple[str, int, str], str] = field(default_factory=dict)
    sweep_run_ids: list[str] = field(default_factory=list)
    failed_run_ids: list[str] = field(default_factory=list)
    deleted_run_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def visible_run_ids(self) -> list[str]:
        return [r for r in self.run_ids if r not in self.deleted_run_ids]


def _clip(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return max(lo, min(hi, x))


def _classification(f1: float, rng: random.Random) -> dict[str, float]:
    """Mutually consistent headline metrics around a target f1."""
    precision = _clip(f1 + rng.uniform(-0.02, 0.02), 0.05, 0.999)
    recall = _clip(f1 * precision / max(2 * precision - f1, 1e-6), 0.05, 0.999)  # so that f1 = 2pr/(p+r)
    f1 = 2 * precision * recall / (precision + recall)
    specificity = _clip(0.99 - (1 - f1) * 0.3 + rng.uniform(-0.005, 0.005), 0.5, 0.9995)
    attack_frac = 0.15
    accuracy = attack_frac * recall + (1 - attack_frac) * specificity
    tp, fn = attack_frac * recall, attack_frac * (1 - recall)
    tn, fp = (1 - attack_frac) * specificity, (1 - attack_frac) * (1 - specificity)
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        Metric.F1: f1,
        Metric.PRECISION: precision,
        Metric.RECALL: recall,
        Metric.ACCURACY: accuracy,
        Metric.AUC: _clip(0.5 + f1 / 2 + 0.02 + rng.uniform(-0.005, 0.005), 0.5, 0.9999),
        Metric.MCC: mcc,
        Metric.SPECIFICITY: specificity,
        Metric.FPR: 1 - specificity,
        Metric.FNR: 1 - recall,
        Metric.BALANCED_ACCURACY: (recall + specificity) / 2,
        Metric.PR_AUC: _clip(f1 + 0.015 + rng.uniform(-0.01, 0.01), 0.0, 0.9999),
        Metric.DR_AT_FPR_1E2: _clip(recall - 0.02 + rng.uniform(-0.01, 0.01)),
        Metric.DR_AT_FPR_1E3: _clip(recall - 0.08 + rng.uniform(-0.02, 0.02)),
    }


def _target_f1(cfg: PipelineConfig, seed_noise: float) -> float:
    f1 = DATASET_BASE_F1.get(cfg.dataset, 0.9) + STAGE_F1_OFFSET[Stage(cfg.stage)]
    f1 += SIZE_KD_F1_OFFSET[(ModelSize(cfg.model_size), cfg.kd.enabled)]
    f1 -= 0.03 * abs(math.log10(cfg.train.lr / 1e-3))  # the default lr is the sweet spot of the sweep
    return _clip(f1 + seed_noise, 0.3, 0.995)


def _log_training(run: TrackedRun, cfg: PipelineConfig, final_f1: float, epochs: int, rng: random.Random) -> float:
    """Per-epoch history (one log_batch for the whole history, step = epoch); returns the last val_loss."""
    floor = 0.05 + (1 - final_f1) * 0.8
    start = floor + rng.uniform(0.6, 1.0)
    tau = max(epochs / 4, 1.0)
    val_loss = start
    history: dict[int, dict[str, float]] = {}
    for epoch in range(epochs):
        decay = math.exp(-epoch / tau)
        train_loss = floor * 0.9 + (start - floor) * decay + rng.gauss(0, 0.01)
        val_loss = floor + (start - floor) * decay * 1.05 + abs(rng.gauss(0, 0.015))
        row = {
            Metric.TRAIN_LOSS.value: max(train_loss, 1e-4),
            Metric.VAL_LOSS.value: val_loss,
            Metric.LR.value: cfg.train.lr * (0.5 ** (epoch // 10)),
            Metric.EPOCH_SECONDS.value: rng.uniform(20, 40)
            if cfg.model_size == ModelSize.TEACHER
            else rng.uniform(6, 12),
        }
        if cfg.stage != Stage.AUTOENCODER:
            row[Metric.VAL_F1.value] = _clip(final_f1 - (final_f1 - 0.5) * decay + rng.gauss(0, 0.005))
        history[epoch] = row
    run.log_history(history)
    return val_loss


def _write_run(
    cfg: PipelineConfig, uri: str, epochs: int, rng: random.Random, seed_noise: float, fail_at_epoch: int | None = None
) -> str:
    final_f1 = _target_f1(cfg, seed_noise)
    run_id = ""
    try:
        with open_run(cfg, tracking_uri=uri) as run:
            run_id = run.run_id
            if fail_at_epoch is not None:
                _log_training(run, cfg, final_f1, fail_at_epoch, rng)
                raise RuntimeError(FAILED_ERROR)
            final: dict[str, float] = {}
            if cfg.stage != Stage.EVALUATION:
                final[Metric.VAL_LOSS.value] = _log_training(run, cfg, final_f1, epochs, rng)
            if cfg.stage == Stage.AUTOENCODER:
                # the VGAE is judged by how well its reconstruction error separates attacks
                final[Metric.AUC.value] = _clip(0.5 + final_f1 / 2 + rng.uniform(-0.01, 0.01))
            else:
                metrics = _classification(final_f1, rng)
                keep = (
                    metrics
                    if cfg.stage == Stage.EVALUATION
                    else {
                        k: metrics[k]
                        for k in (Metric.F1, Metric.PRECISION, Metric.RECALL, Metric.ACCURACY, Metric.AUC, Metric.MCC)
                    }
                )
                final.update({str(k): v for k, v in keep.items()})
            if cfg.stage == Stage.EVALUATION:
                for split in dataset_spec(cfg.dataset).test_splits:
                    offset = SCENARIO_F1_OFFSET.get(split[:7], -0.05)
                    per = _classification(_clip(final_f1 + offset + rng.uniform(-0.01, 0.01), 0.3, 0.995), rng)
                    for key in (Metric.F1, Metric.ACCURACY, Metric.PRECISION, Metric.RECALL, Metric.AUC, Metric.FPR):
                        final[scenario_metric(split, key)] = per[key]
            if cfg.stage == Stage.FUSION:
                final["mean_alpha"] = rng.uniform(0.3, 0.7)  # the DQN's average weight on the GAT over VGAE
            run.log_final(final)
    except RuntimeError as exc:
        if fail_at_epoch is None or str(exc) != FAILED_ERROR:
            raise
    return run_id


def _config(
    dataset: str,
    stage: Stage,
    size: ModelSize,
    seed: int,
    epochs: int,
    teacher: str | None = None,
    lr: float | None = None,
) -> PipelineConfig:
    from kdgat_core.config import STAGE_ARCH

    cfg = preset(f"{STAGE_ARCH[stage]},{size}", dataset=dataset)
    cfg.train.seed = seed
    cfg.train.epochs = epochs
    if lr is not None:
        cfg.train.lr = lr
    if teacher is not None:
        cfg.kd.enabled = True
        cfg.kd.teacher_run_id = teacher
    return cfg


def write_sample_runs(
    tracking_uri: str,
    datasets: tuple[str, ...] = ("hcrl_sa", "set_01"),
    seeds: tuple[int, ...] = (0, 1, 2),
    epochs: int = 20,
    failed: int = 1,
    deleted: int = 1,
    rng_seed: int = 0,
) -> SampleRuns:
    """Write the sample runs through open_run into tracking_uri (created if missing); see the module docstring."""
    t0 = time.perf_counter()
    rng = random.Random(rng_seed)
    out = SampleRuns(tracking_uri=tracking_uri)
    for dataset in datasets:
        dataset_spec(dataset)  # an unknown dataset is refused before anything is written
        for seed in seeds:
            seed_noise = {size_kd: rng.gauss(0, 0.006) for size_kd in SIZE_KD_F1_OFFSET}
            for stage in PIPELINE_ORDER:
                teacher_id = _write_run(
                    _config(dataset, stage, ModelSize.TEACHER, seed, epochs),
                    tracking_uri,
                    epochs,
                    rng,
                    seed_noise[(ModelSize.TEACHER, False)],
                )
                out.teachers[(dataset, seed, stage.value)] = teacher_id
                student_id = _write_run(
                    _config(dataset, stage, ModelSize.STUDENT, seed, epochs),
                    tracking_uri,
                    epochs,
                    rng,
                    seed_noise[(ModelSize.STUDENT, False)],
                )
                kd_id = _write_run(
                    _config(dataset, stage, ModelSize.STUDENT, seed, epochs, teacher=teacher_id),
                    tracking_uri,
                    epochs,
                    rng,
                    seed_noise[(ModelSize.STUDENT, True)],
                )
                out.kd_students[(dataset, seed, stage.value)] = kd_id
                out.run_ids += [teacher_id, student_id, kd_id]
    # a learning-rate sweep of the first dataset's teacher GAT, so `kdgat sweep --param train.lr` has content
    for lr in SWEEP_LRS:
        for seed in seeds:
            run_id = _write_run(
                _config(datasets[0], Stage.CURRICULUM, ModelSize.TEACHER, seed, epochs, lr=lr),
                tracking_uri,
                epochs,
                rng,
                rng.gauss(0, 0.006),
            )
            out.sweep_run_ids.append(run_id)
            out.run_ids.append(run_id)
    for i in range(failed):
        dataset = datasets[i % len(datasets)]
        teacher = out.teachers.get((dataset, seeds[0], Stage.FUSION.value))
        cfg = _config(dataset, Stage.FUSION, ModelSize.STUDENT, seeds[0], epochs, teacher=teacher)
        run_id = _write_run(cfg, tracking_uri, epochs, rng, 0.0, fail_at_epoch=max(1, epochs // 3))
        out.failed_run_ids.append(run_id)
        out.run_ids.append(run_id)
    if deleted:
        store = get_store(tracking_uri)
        assert store is not None
        for i in range(deleted):
            dataset = datasets[i % len(datasets)]
            run_id = _write_run(
                _config(dataset, Stage.EVALUATION, ModelSize.TEACHER, seeds[0], epochs), tracking_uri, epochs, rng, 0.0
            )
            with_retry(store.client.delete_run, run_id, what="delete_run")
            out.deleted_run_ids.append(run_id)
            out.run_ids.append(run_id)
    out.seconds = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdgat_core.tracking.sample", description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///demo.db (created if missing)")
    parser.add_argument("--datasets", default="hcrl_sa,set_01", help="comma-separated dataset names")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per dataset")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    from kdgat_core.config import KdgatError

    try:
        runs = write_sample_runs(
            args.tracking_uri,
            datasets=tuple(d for d in args.datasets.split(",") if d),
            seeds=tuple(range(args.seeds)),
            epochs=args.epochs,
        )
    except KdgatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {len(runs.run_ids)} runs ({len(runs.failed_run_ids)} failed, {len(runs.deleted_run_ids)} deleted) "
        f"to {args.tracking_uri} in {runs.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
