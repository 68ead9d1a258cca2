"""Names, registries, the pipeline configuration and settings resolution: defined once, imported everywhere.

Nothing here imports torch, torch_geometric, mlflow or duckdb: the reader side imports this module.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Self

# ----------------------------------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------------------------------
EXPERIMENT_NAME = "kd-gat-pipeline"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SETTINGS_FILE = "kdgat.toml"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_READ_URI = "KDGAT_READ_URI"
ENV_DATA_ROOT = "KDGAT_DATA_ROOT"
ENV_CACHE_DIR = "KDGAT_CACHE_DIR"
ARTIFACT_ROOT_DIR = "experimentruns"
# `kdgat query` and the TUI SQL console stop a user query after this long (a runaway recursive CTE never ends)
SQL_TIMEOUT_S = 60.0
# `--teacher auto`: the job finds its teacher when it starts (newest complete teacher run of the same dataset and stage)
TEACHER_AUTO = "auto"
# The data-preparation job at the head of a submitted pipeline (builds the graph cache on a CPU partition)
PREPROCESS_JOB = "preprocess"


class KdgatError(Exception):
    """A user-facing error: the CLI prints its message as one sentence on stderr and exits non-zero."""


class StrEnum(str, Enum):
    def __str__(self) -> str:  # so f"{Stage.FUSION}" is "fusion"
        return self.value

    @classmethod
    def values(cls) -> list[str]:
        return [m.value for m in cls]

    @classmethod
    def parse(cls, value: str, what: str | None = None) -> Self:
        try:
            return cls(value)
        except ValueError:
            label = what or cls.__name__.lower()
            raise KdgatError(f"Unknown {label} '{value}'; choose one of: {', '.join(cls.values())}.") from None


class Stage(StrEnum):
    AUTOENCODER = "autoencoder"
    CURRICULUM = "curriculum"
    FUSION = "fusion"
    EVALUATION = "evaluation"


class ModelSize(StrEnum):
    TEACHER = "teacher"
    STUDENT = "student"


class Arch(StrEnum):
    VGAE = "vgae"
    GAT = "gat"
    DQN = "dqn"
    EVAL = "eval"


STAGE_ARCH: dict[Stage, Arch] = {
    Stage.AUTOENCODER: Arch.VGAE,
    Stage.CURRICULUM: Arch.GAT,
    Stage.FUSION: Arch.DQN,
    Stage.EVALUATION: Arch.EVAL,
}
ARCH_STAGE: dict[Arch, Stage] = {a: s for s, a in STAGE_ARCH.items()}
# Which earlier stages a stage needs (same dataset and size), in pipeline order.
STAGE_NEEDS: dict[Stage, tuple[Stage, ...]] = {
    Stage.AUTOENCODER: (),
    Stage.CURRICULUM: (Stage.AUTOENCODER,),
    Stage.FUSION: (Stage.AUTOENCODER, Stage.CURRICULUM),
    Stage.EVALUATION: (Stage.AUTOENCODER, Stage.CURRICULUM, Stage.FUSION),
}
PIPELINE_ORDER: tuple[Stage, ...] = (Stage.AUTOENCODER, Stage.CURRICULUM, Stage.FUSION, Stage.EVALUATION)

# Column prefixes of the wide runs table, as mlflow.search_runs spells them: params.train.lr, metrics.f1, tags.x
PARAM_PREFIX, METRIC_PREFIX, TAG_PREFIX = "params.", "metrics.", "tags."


class RunStatus(StrEnum):
    """The `status` tag kdgat writes. LOST is derived by the reader (tag says running, job is gone)."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    LOST = "lost"


class FailureCause(StrEnum):
    """Why a run or job failed, as `kdgat failures` groups them (scheduler facts first, then the run's error)."""

    OOM = "oom"  # the job exceeded its memory request (SLURM killed it)
    TIMEOUT = "timeout"  # the job hit its time limit
    NODE_FAIL = "node_fail"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"
    CUDA_OOM = "cuda_oom"  # torch ran out of GPU memory
    NAN_LOSS = "nan_loss"  # a loss metric became NaN
    EXCEPTION = "exception"  # a Python exception (class and message in error_msg)
    FAILED = "failed"  # failed for a reason neither the scheduler nor the run recorded


# A retry's run carries the id of the run it retries (kdgat resubmit): lineage and the TUI show retries.
RETRY_OF_TAG = "retry_of"
ENV_RETRY_OF = "KDGAT_RETRY_OF"  # how a resubmitted job hands that id to its run


RETRY_MARK = "↻"  # how lineage (CLI and TUI) marks a retry


def retry_label(retried: str) -> str:
    """`↻ retry of 1a2b3c4d` (a run id, shortened) or `↻ retry of job 1234` (a job that never opened a run)."""
    return f"{RETRY_MARK} retry of {retried if retried.startswith('job ') else retried[:8]}"


def retry_of_value(by_task: dict[str, str]) -> str:
    """What ENV_RETRY_OF holds: the retried run's id, or for an array `task=run,task=run` (one per retried index)."""
    if list(by_task) == [""]:
        return by_task[""]
    return ",".join(f"{task}={run}" for task, run in by_task.items())


def retry_of_for_task(value: str, task: str | None) -> str | None:
    """The run one job (or array task) retries, from ENV_RETRY_OF."""
    if not value:
        return None
    if "=" not in value:
        return value
    pairs = dict(p.split("=", 1) for p in value.split(",") if "=" in p)
    return pairs.get(task or "")


class MlflowStatus(StrEnum):
    RUNNING = "RUNNING"
    SCHEDULED = "SCHEDULED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class Tag(StrEnum):
    DATASET = "dataset"
    STAGE = "stage"
    MODEL_SIZE = "model_size"
    USE_KD = "use_kd"
    MODEL_ARCH = "model_arch"
    TEACHER_RUN_ID = "teacher_run_id"
    RUN_ID = "run_id"
    STATUS = "status"
    START_TIME = "start_time"
    END_TIME = "end_time"
    ERROR_MSG = "error_msg"
    SLURM_JOB_ID = "slurm_job_id"
    GIT_COMMIT = "git_commit"
    SEED = "seed"
    ARTIFACT_DIR = "artifact_dir"  # absolute path of experimentruns/<dataset>/<size>_<stage>[_kd]/<run_id>/


# Set at a run's start: the process and host that run it. A run tagged running whose process is gone (same host,
# pid dead or reused) is lost, whatever the executor; kept out of Tag so the `runs` view's columns stay as they are.
PID_TAG = "pid"
HOST_TAG = "host"


# The convention tags that the `runs` view turns into columns, in display order.
CONVENTION_TAGS: tuple[Tag, ...] = tuple(Tag)
MLFLOW_RUN_NAME_TAG = "mlflow.runName"


class Metric(StrEnum):
    VAL_LOSS = "val_loss"
    ACCURACY = "accuracy"
    F1 = "f1"
    PRECISION = "precision_"  # with the underscore: existing databases have it
    RECALL = "recall"
    AUC = "auc"
    MCC = "mcc"
    # evaluation extras
    SPECIFICITY = "specificity"
    BALANCED_ACCURACY = "balanced_accuracy"
    FPR = "fpr"
    FNR = "fnr"
    PR_AUC = "pr_auc"
    DR_AT_FPR_1E2 = "dr_at_fpr_1e-2"
    DR_AT_FPR_1E3 = "dr_at_fpr_1e-3"
    # per-epoch history (step = epoch)
    TRAIN_LOSS = "train_loss"
    VAL_F1 = "val_f1"
    LR = "lr"
    EPOCH_SECONDS = "epoch_seconds"
    # training-side extras
    VAL_AUC = "val_auc"
    EPSILON = "epsilon"  # fusion: exploration rate per episode
    THRESHOLD = "threshold"  # decision threshold chosen on validation
    NUM_PARAMETERS = "num_parameters"
    TEACHER_NUM_PARAMETERS = "teacher_num_parameters"
    TRAIN_SECONDS = "train_seconds"
    CURRICULUM_RATIO = "curriculum_ratio"  # normal:attack ratio of the windows an epoch trained on
    CURRICULUM_WINDOWS = "curriculum_windows"
    VAL_F1_HIDDEN_IDS = (
        "val_f1_hidden_ids"  # curriculum: validation F1 with every CAN id hidden (unknown-vehicle proxy)
    )
    VAL_F1_WITH_IDS = "val_f1_with_ids"  # curriculum: validation F1 with the ids shown (when inference hides them)


# Set on a fusion run: did the fused decision beat the best single model on held-out validation windows?
FUSION_BEATS_BEST_TAG = "fusion_beats_best_single"
# Set on a fusion run: what it deploys, "bandit" (the DQN's per-window alpha) or "fixed_alpha=<a>" (it did better)
FUSION_POLICY_TAG = "fusion_policy"
# The third fusion input beside the GAT and the VGAE: the unsupervised per-id timing score (stages.scoring)
TIMING_SCORE = "timing"
# Logged per test scenario by the evaluation (`<scenario>/attack_share`): the share of attack windows, from which the
# trivial answers (everything an attack: F1 2p / (1 + p), accuracy p; everything normal: accuracy 1 - p) follow
ATTACK_SHARE = "attack_share"
# Set on an evaluation run whose scenarios leave metrics undefined (no attack window: F1, recall, AUC ...):
# "<scenario>/<metric>,..."; those metrics are not logged as numbers
UNDEFINED_METRICS_TAG = "undefined_metrics"


# The final metrics that become columns of the `runs` view and of leaderboards, in display order.
STANDARD_METRICS: tuple[Metric, ...] = (
    Metric.VAL_LOSS,
    Metric.ACCURACY,
    Metric.F1,
    Metric.PRECISION,
    Metric.RECALL,
    Metric.AUC,
    Metric.MCC,
)
LOWER_IS_BETTER: frozenset[str] = frozenset(
    {
        Metric.VAL_LOSS.value,
        Metric.TRAIN_LOSS.value,
        Metric.FPR.value,
        Metric.FNR.value,
    }
)


def metric_direction(metric: str) -> str:
    """'asc' for metrics where lower is better, else 'desc'. Per-scenario names (`test_02/fpr`) follow their leaf."""
    leaf = metric.rsplit("/", 1)[-1]
    # prefixed variants (`val_fpr`, `gat_val_fnr`, `kd_loss`) sort like the metric they end with
    lower = leaf in LOWER_IS_BETTER or leaf.endswith("loss") or any(leaf.endswith("_" + m) for m in LOWER_IS_BETTER)
    return "asc" if lower else "desc"


def scenario_metric(scenario: str, metric: str | Metric) -> str:
    """Name of a per-test-scenario metric, e.g. `test_02_unknown_vehicle_known_attack/f1`."""
    return f"{scenario}/{metric}"


def run_name(dataset: str, model_size: str | ModelSize, stage: str | Stage, use_kd: bool) -> str:
    """`<dataset>/<model_size>_<stage>[_kd]`, also the artifact folder under `experimentruns/`."""
    return f"{dataset}/{model_size}_{stage}{'_kd' if use_kd else ''}"


def prerequisite_tag(stage: str | Stage) -> str:
    """Tag naming the earlier run a stage used, e.g. `autoencoder_run_id` on a curriculum run."""
    return f"{stage}_run_id"


def bool_tag(value: bool) -> str:
    """Booleans are stored the way existing databases have them: 'True' / 'False'."""
    return "True" if value else "False"


# How other writers spell a boolean tag: every reader matches these case-insensitively (`True`, `true`, `1` agree)
TRUE_SPELLINGS: tuple[str, ...] = ("true", "1", "yes")
FALSE_SPELLINGS: tuple[str, ...] = ("false", "0", "no")
# The tags that hold a boolean (readers show them as bool_tag spells them, whatever the writer wrote)
BOOL_TAGS: tuple[str, ...] = (Tag.USE_KD.value,)


def parse_bool_tag(value: object) -> bool | None:
    """True / False for any spelling in TRUE_SPELLINGS / FALSE_SPELLINGS (any case), None for anything else."""
    if isinstance(value, bool):
        return value
    low = str(value).strip().lower() if value is not None else ""
    if low in TRUE_SPELLINGS:
        return True
    if low in FALSE_SPELLINGS:
        return False
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Dataset registry
# ----------------------------------------------------------------------------------------------------------------------
TRAIN_ATTACK_FREE = "train_01_attack_free"
TRAIN_WITH_ATTACKS = "train_02_with_attacks"
TRAIN_SPLITS: tuple[str, ...] = (TRAIN_ATTACK_FREE, TRAIN_WITH_ATTACKS)
TEST_SPLITS_BASE: tuple[str, ...] = (
    "test_01_known_vehicle_known_attack",
    "test_02_unknown_vehicle_known_attack",
    "test_03_known_vehicle_unknown_attack",
    "test_04_unknown_vehicle_unknown_attack",
)
TEST_SPLITS_SET: tuple[str, ...] = TEST_SPLITS_BASE + ("test_05_suppress", "test_06_masquerade")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    train_splits: tuple[str, ...] = TRAIN_SPLITS
    test_splits: tuple[str, ...] = TEST_SPLITS_BASE
    description: str = ""

    @property
    def splits(self) -> tuple[str, ...]:
        return self.train_splits + self.test_splits


BUILTIN_DATASETS: dict[str, DatasetSpec] = {
    "hcrl_sa": DatasetSpec(
        "hcrl_sa", description="HCRL survival analysis (Kia Soul, Sonata, Spark; DoS, fuzzing, malfunction)"
    ),
    "hcrl_ch": DatasetSpec("hcrl_ch", description="HCRL Car-Hacking (DoS, fuzzy, gear and RPM spoofing)"),
    **{
        f"set_0{i}": DatasetSpec(f"set_0{i}", test_splits=TEST_SPLITS_SET, description=f"can-train-and-test set_0{i}")
        for i in range(1, 5)
    },
    "synthetic": DatasetSpec(
        "synthetic", description="deterministic synthetic CAN traffic generated by kdgat (tests, demo)"
    ),
}


def datasets(settings: Settings | None = None) -> dict[str, DatasetSpec]:
    """Built-in datasets plus those registered in kdgat.toml under [datasets.<name>]."""
    settings = settings or load_settings()
    out = dict(BUILTIN_DATASETS)
    for name, spec in (settings.raw.get("datasets") or {}).items():
        if not isinstance(spec, dict):
            raise KdgatError(f"kdgat.toml: [datasets.{name}] must be a table.")
        out[name] = DatasetSpec(
            name,
            train_splits=tuple(spec.get("train_splits", TRAIN_SPLITS)),
            test_splits=tuple(spec.get("test_splits", TEST_SPLITS_BASE)),
            description=str(spec.get("description", "")),
        )
    return out


def dataset_spec(name: str, settings: Settings | None = None) -> DatasetSpec:
    known = datasets(settings)
    if name not in known:
        raise KdgatError(f"Unknown dataset '{name}'; known datasets: {', '.join(sorted(known))}.")
    return known[name]


# ----------------------------------------------------------------------------------------------------------------------
# Pipeline configuration: one object -> MLflow params (dotted keys), `kdgat run` command line, config.json
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    window: int = 100  # messages per window graph
    stride: int = 100  # messages between window starts (== window: non-overlapping)
    val_fraction: float = 0.2  # temporal: the last part of each training recording
    max_messages: int = 0  # 0 = all; >0 caps messages per recording (quick runs)
    num_workers: int = 0
    # synthetic subtle attacks (rate, drift, suppress, masquerade) injected into the validation tails, so decisions
    # fitted on validation meet attacks that are not floods (kdgat_core.data.injection; docs/training.md)
    val_injection: bool = True
    injection_seed: int = 0


@dataclass
class VGAEConfig:
    hidden_dims: list[int] = field(default_factory=lambda: [480, 240, 48])
    latent_dim: int = 48
    heads: int = 4
    embedding_dim: int = 32
    dropout: float = 0.1
    kl_weight: float = 0.01
    feature_weight: float = 1.0
    id_weight: float = 1.0
    edge_weight: float = 1.0
    # "recording": each error term as a robust z-score against its recording's attack-free calibration part (an
    # unknown vehicle's windows all reconstruct worse); "none": the raw weighted reconstruction error
    score_norm: str = "recording"


@dataclass
class GATConfig:
    hidden: int = 48
    layers: int = 3
    heads: int = 8
    embedding_dim: int = 32
    dropout: float = 0.2
    jk: str = "cat"
    pooling: str = "mean_max"
    curriculum_start_ratio: float = 1.0  # normal:attack ratio in epoch 0; grows towards the natural ratio
    curriculum_ramp: float = 0.6  # fraction of the epochs after which every normal window is in (natural ratio)
    id_mask: float = 0.5  # chance a training window is seen with all CAN ids hidden (unknown vehicles)
    inference_ids: str = "hide"  # "hide": judge every window without its ids (needs id_mask > 0); "keep"


@dataclass
class DQNConfig:
    hidden: int = 576
    layers: int = 3
    num_alphas: int = 11
    buffer_size: int = 50_000
    batch_size: int = 256
    gamma: float = 0.0  # contextual bandit: no bootstrapping from a made-up next state
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay: float = 0.995
    target_update: int = 100
    episodes: int = 50
    # the per-id timing score as a third fusion input (its weight, possibly 0, is chosen on validation)
    timing_input: bool = True
    # the VGAE and timing thresholds: best validation F1 among those flagging at most this share of validation normals
    # (subtle injected attacks would otherwise pull them down to false alarms on every tenth normal window)
    max_val_fpr: float = 0.01
    # the one-standard-error rule, in bootstrap standard errors of validation F1 (0: off): of those thresholds, the
    # highest within it of the best (fewer false alarms on recordings they were not fitted on); and a fused detector
    # deployed only if it beats its best single input by more than it (else that input alone)
    se_rule: float = 1.0


@dataclass
class TrainConfig:
    epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 64
    patience: int = 10
    seed: int = 42
    device: str = "cpu"
    mixed_precision: bool = False
    threads: int = 1  # torch CPU threads; 0 = torch's default (oversubscribed cores make torch ~10x slower)
    # earlier runs this stage builds on; empty = the newest complete run of the same dataset and size
    autoencoder_run_id: str = ""
    curriculum_run_id: str = ""
    fusion_run_id: str = ""


@dataclass
class EvalConfig:
    # "fixed": fused score >= 0.5 (the VGAE alone at its Youden threshold); "fpr_budget": each detector's threshold
    # is the (1 - fpr_budget) quantile of its score on validation normal windows (no attack labels needed)
    threshold: str = "fixed"
    fpr_budget: float = 0.01


@dataclass
class KDConfig:
    enabled: bool = False
    teacher_run_id: str = ""
    temperature: float = 4.0
    alpha: float = 0.7


@dataclass
class PipelineConfig:
    """Everything a stage needs. Flattened to dotted keys for MLflow params and `-O key=value` overrides."""

    dataset: str = "hcrl_sa"
    stage: str = Stage.AUTOENCODER.value
    model_size: str = ModelSize.TEACHER.value
    data: DataConfig = field(default_factory=DataConfig)
    vgae: VGAEConfig = field(default_factory=VGAEConfig)
    gat: GATConfig = field(default_factory=GATConfig)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # --- naming ---------------------------------------------------------------------------------------------------
    @property
    def arch(self) -> Arch:
        return STAGE_ARCH[Stage(self.stage)]

    @property
    def run_name(self) -> str:
        return run_name(self.dataset, self.model_size, self.stage, self.kd.enabled)

    # --- conversions --------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flatten(self) -> dict[str, Any]:
        """Dotted keys -> values, e.g. {'train.lr': 0.001, 'vgae.hidden_dims': [480, 240, 48]}."""
        return flatten_dict(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        cfg = cls()
        for key, value in flatten_dict(data).items():
            cfg.set(key, value, coerce=False)
        return cfg

    def set(self, key: str, value: Any, coerce: bool = True) -> None:
        """Set a dotted key; with coerce, `value` is a string from the command line parsed to the field's type."""
        parts = key.split(".")
        obj: Any = self
        for part in parts[:-1]:
            if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
                raise KdgatError(f"Unknown config key '{key}'; see `kdgat run --help` or `kdgat config-keys`.")
            obj = getattr(obj, part)
        leaf = parts[-1]
        fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
        if leaf not in fields or dataclasses.is_dataclass(getattr(obj, leaf)):
            raise KdgatError(f"Unknown config key '{key}'; see `kdgat run --help` or `kdgat config-keys`.")
        current = getattr(obj, leaf)
        setattr(obj, leaf, _coerce(key, value, current) if coerce else value)

    def override(self, pairs: Iterable[str]) -> PipelineConfig:
        """Apply `key=value` strings (the `-O` option)."""
        for pair in pairs:
            if "=" not in pair:
                raise KdgatError(f"Override '{pair}' is not of the form key=value.")
            key, value = pair.split("=", 1)
            self.set(key.strip(), value.strip())
        return self

    def run_command(self, executable: str = "kdgat") -> list[str]:
        """The `kdgat run` argv that rebuilds exactly this config (used inside rendered sbatch scripts)."""
        argv = [executable, "run", self.stage, "--preset", f"{self.arch},{self.model_size}", "--dataset", self.dataset]
        if self.kd.enabled:
            argv += ["--kd", "--teacher", self.kd.teacher_run_id]
        for pair in self.diff_overrides():
            if not pair.startswith(("kd.enabled=", "kd.teacher_run_id=")):
                argv += ["-O", pair]
        return argv

    def diff_overrides(self, base: PipelineConfig | None = None) -> list[str]:
        """`key=value` strings that turn `base` (default: the preset for this stage/size) into this config."""
        base = base or preset(f"{self.arch},{self.model_size}", dataset=self.dataset)
        mine, theirs = self.flatten(), base.flatten()
        return [
            f"{k}={_format_value(v)}"
            for k, v in mine.items()
            if k not in ("dataset", "stage", "model_size") and theirs.get(k) != v
        ]


# Ranges a `kdgat run` config must satisfy, checked before a run is opened: (low, high, low inclusive, high inclusive)
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "data.window": (2, math.inf, True, False),
    "data.stride": (1, math.inf, True, False),
    "data.val_fraction": (0, 1, False, False),
    "data.max_messages": (0, math.inf, True, False),
    "train.epochs": (1, math.inf, True, False),
    "train.lr": (0, 10, False, True),
    "train.weight_decay": (0, math.inf, True, False),
    "train.batch_size": (1, math.inf, True, False),
    "train.patience": (0, math.inf, True, False),
    "train.threads": (0, math.inf, True, False),
    "kd.temperature": (0, math.inf, False, False),
    "kd.alpha": (0, 1, True, True),
    "dqn.episodes": (1, math.inf, True, False),
    "dqn.batch_size": (1, math.inf, True, False),
    "dqn.buffer_size": (1, math.inf, True, False),
    "dqn.num_alphas": (2, math.inf, True, False),
    "dqn.gamma": (0, 1, True, True),
    "dqn.epsilon_start": (0, 1, True, True),
    "dqn.epsilon_end": (0, 1, True, True),
    "dqn.epsilon_decay": (0, 1, False, True),
    "eval.fpr_budget": (0, 1, False, False),
}
_RANGE_SUFFIXES: dict[str, tuple[float, float, bool, bool]] = {
    ".dropout": (0, 1, True, False),
    ".hidden": (1, math.inf, True, False),
    ".layers": (1, math.inf, True, False),
    ".heads": (1, math.inf, True, False),
    ".latent_dim": (1, math.inf, True, False),
    ".embedding_dim": (1, math.inf, True, False),
}


def validate_config(cfg: PipelineConfig) -> None:
    """Every value finite and in its range: a mistake is one sentence before a run is opened, not a FAILED run."""
    for key, value in cfg.flatten().items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise KdgatError(f"{key} must be a finite number, not {v}.")
        rule = _RANGES.get(key) or next((r for suf, r in _RANGE_SUFFIXES.items() if key.endswith(suf)), None)
        if key.endswith("hidden_dims"):
            rule = (1, math.inf, True, False)
        if rule is None or isinstance(value, bool):
            continue
        lo, hi, lo_in, hi_in = rule
        for v in values:
            if not isinstance(v, (int, float)):
                continue
            ok = (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
            if not ok:
                left, right = "[" if lo_in else "(", "]" if hi_in else ")"
                shown_hi = "inf" if hi == math.inf else f"{hi:g}"
                raise KdgatError(f"{key} must be in {left}{lo:g}, {shown_hi}{right}, got {v}.")


def flatten_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_dict(v, key + "."))
        else:
            out[key] = v
    return out


def _format_value(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _coerce(key: str, raw: Any, current: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        if isinstance(current, bool):
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, list):
            items = [x for x in re.split(r"[,\s]+", raw.strip("[] ")) if x]
            elem = type(current[0]) if current else int
            return [elem(x) for x in items]
    except ValueError:
        kind = type(current).__name__
        raise KdgatError(f"Override {key}={raw!r} is not a valid {kind}.") from None
    return raw


# ----------------------------------------------------------------------------------------------------------------------
# Presets: `<arch>,<size>`; sizes follow the published design (teacher vs student)
# ----------------------------------------------------------------------------------------------------------------------
PRESET_SIZES: dict[tuple[Arch, ModelSize], dict[str, Any]] = {
    (Arch.VGAE, ModelSize.TEACHER): {"vgae.hidden_dims": [480, 240, 48], "vgae.latent_dim": 48, "vgae.heads": 4},
    (Arch.VGAE, ModelSize.STUDENT): {"vgae.hidden_dims": [80, 40, 16], "vgae.latent_dim": 16, "vgae.heads": 1},
    (Arch.GAT, ModelSize.TEACHER): {"gat.hidden": 48, "gat.layers": 3, "gat.heads": 8},
    (Arch.GAT, ModelSize.STUDENT): {"gat.hidden": 24, "gat.layers": 2, "gat.heads": 4},
    (Arch.DQN, ModelSize.TEACHER): {"dqn.hidden": 576, "dqn.layers": 3},
    (Arch.DQN, ModelSize.STUDENT): {"dqn.hidden": 160, "dqn.layers": 2},
    (Arch.EVAL, ModelSize.TEACHER): {},
    (Arch.EVAL, ModelSize.STUDENT): {},
}
# Whole-config variants selectable with `--preset <arch>,<size>,<variant>`: per-size values applied over the preset.
# Synthetic data gives ~400 windows: small batches and a higher lr give the models enough optimizer steps to learn.
_TINY_COMMON = {
    "data.max_messages": 20_000,
    "train.epochs": 20,
    "train.patience": 10,
    "train.batch_size": 16,
    "train.lr": 0.005,
    "dqn.episodes": 3,
}
PRESET_VARIANTS: dict[str, dict[ModelSize, dict[str, Any]]] = {
    "tiny": {
        ModelSize.TEACHER: {
            **_TINY_COMMON,
            "vgae.hidden_dims": [32, 16],
            "vgae.latent_dim": 16,
            "vgae.heads": 2,
            "vgae.embedding_dim": 8,
            "gat.hidden": 16,
            "gat.layers": 2,
            "gat.heads": 2,
            "gat.embedding_dim": 8,
            "dqn.hidden": 64,
            "dqn.layers": 2,
        },
        ModelSize.STUDENT: {
            **_TINY_COMMON,
            "vgae.hidden_dims": [8, 4],
            "vgae.latent_dim": 4,
            "vgae.heads": 1,
            "vgae.embedding_dim": 4,
            "gat.hidden": 8,
            "gat.layers": 2,
            "gat.heads": 2,
            "gat.embedding_dim": 4,
            "dqn.hidden": 16,
            "dqn.layers": 2,
        },
    },
}


# `cpu`: the whole pipeline (teacher, student, distilled student; four stages) on full hcrl_sa within 30 min on 2 cores.
_CPU_COMMON = {"train.epochs": 8, "train.patience": 3, "train.batch_size": 128, "dqn.episodes": 30}
PRESET_VARIANTS["cpu"] = {
    ModelSize.TEACHER: {
        **_CPU_COMMON,
        "vgae.hidden_dims": [256, 128, 48],
        "vgae.latent_dim": 48,
        "vgae.heads": 4,
        "gat.hidden": 32,
        "gat.layers": 3,
        "gat.heads": 4,
    },
    ModelSize.STUDENT: {
        **_CPU_COMMON,
        "vgae.embedding_dim": 8,
        "gat.hidden": 16,
        "gat.layers": 2,
        "gat.heads": 2,
        "gat.embedding_dim": 8,
    },
}


def preset(name: str, dataset: str = "hcrl_sa") -> PipelineConfig:
    """`vgae,teacher` -> a PipelineConfig for the autoencoder stage at teacher size (optional `,variant`)."""
    parts = [p.strip() for p in name.split(",") if p.strip()]
    if len(parts) not in (2, 3):
        raise KdgatError(
            f"Preset '{name}' must look like <arch>,<size> (e.g. vgae,teacher) or <arch>,<size>,<variant>."
        )
    arch = Arch.parse(parts[0], "architecture")
    size = ModelSize.parse(parts[1], "model size")
    cfg = PipelineConfig(stage=ARCH_STAGE[arch].value, model_size=size.value, dataset=dataset)
    for key, value in PRESET_SIZES[(arch, size)].items():
        cfg.set(key, value, coerce=False)
    if len(parts) == 3:
        if parts[2] not in PRESET_VARIANTS:
            raise KdgatError(f"Unknown preset variant '{parts[2]}'; choose one of: {', '.join(PRESET_VARIANTS)}.")
        for key, value in PRESET_VARIANTS[parts[2]][size].items():
            cfg.set(key, value, coerce=False)
    return cfg


# ----------------------------------------------------------------------------------------------------------------------
# Settings: kdgat.toml (searched upwards from the working directory), environment, flags
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    path: Path | None = None  # the kdgat.toml in force, if any
    raw: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.get(name) or {}
        if not isinstance(value, dict):
            raise KdgatError(f"{self.path}: [{name}] must be a table.")
        return value


def find_settings_file(start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / SETTINGS_FILE
        if candidate.is_file():
            return candidate
    return None


def load_settings(start: Path | None = None) -> Settings:
    path = find_settings_file(start)
    if path is None:
        return Settings()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise KdgatError(f"Cannot read {path}: it is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
    except OSError as exc:
        raise KdgatError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise KdgatError(f"Cannot read {path}: {exc}.") from None
    validate_settings(raw, path)
    return Settings(path=path, raw=raw)


def validate_settings(raw: dict[str, Any], path: Path | str = SETTINGS_FILE) -> None:
    """Check kdgat.toml against its schema (pydantic): an unknown key or a value of the wrong type is named."""
    from pydantic import ValidationError

    from kdgat_core.settings_schema import SettingsFile

    try:
        SettingsFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        where = f"[{'.'.join(loc[:-1])}] " if len(loc) > 1 else ""
        key = loc[-1] if loc else "?"
        if err["type"] == "extra_forbidden":
            place = f"in {where.strip()}" if where else "at the top level"
            known = ", ".join(known_settings_keys(loc[:-1]))
            raise KdgatError(f"{path}: unknown key '{key}' {place}; known keys there: {known}.") from None
        given = err.get("input")
        raise KdgatError(f"{path}: {where}{key} = {given!r} is invalid: {err['msg'].lower()}.") from None


def known_settings_keys(loc: list[str]) -> list[str]:
    """The keys the kdgat.toml schema allows at a location (`[]` top level, `['tracking']`, `['datasets', 'x']`)."""
    from kdgat_core.settings_schema import SettingsFile

    model: Any = SettingsFile
    for part in loc:
        fields = getattr(model, "model_fields", {})
        if part in fields:
            model = fields[part].annotation
        # dict[str, Model] (datasets) and Optional[...]: step into the model they hold
        for arg in getattr(model, "__args__", ()):
            for inner in (arg, *getattr(arg, "__args__", ())):
                if hasattr(inner, "model_fields"):
                    model = inner
    return list(getattr(model, "model_fields", {}))


@dataclass(frozen=True)
class Resolved:
    """A setting's value and where it came from (what `kdgat doctor` prints)."""

    value: str
    source: str


def resolve_tracking_uri(flag: str | None = None, settings: Settings | None = None) -> Resolved:
    """--tracking-uri flag > MLFLOW_TRACKING_URI > kdgat.toml ([tracking] uri) > sqlite:///mlflow.db."""
    if flag:
        return Resolved(flag, "the --tracking-uri flag")
    env = os.environ.get(ENV_TRACKING_URI)
    if env:
        return Resolved(env, f"the {ENV_TRACKING_URI} environment variable")
    settings = settings or load_settings()
    uri = settings.section("tracking").get("uri")
    if uri:
        return Resolved(_settings_uri(str(uri), settings), f"{settings.path}")
    return Resolved(DEFAULT_TRACKING_URI, "the built-in default")


def _settings_uri(uri: str, settings: Settings) -> str:
    """A URI from kdgat.toml: a relative sqlite path is relative to that file, not to the working directory."""
    path = sqlite_path(uri, must_exist=False)
    if path is not None and not path.is_absolute() and settings.path is not None:
        return "sqlite:///" + str((settings.path.parent / path).resolve())
    return uri


def sqlite_path(uri: str, must_exist: bool = True) -> Path | None:
    """The file behind a `sqlite:///...` URI (or a plain path); None for non-sqlite URIs."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
    elif uri.startswith("sqlite://"):
        raise KdgatError(f"Tracking URI '{uri}' has no file path; use sqlite:///relative.db or sqlite:////abs/path.db.")
    elif "://" in uri:
        return None
    else:
        path = Path(uri)
    if must_exist and path.is_dir():
        raise KdgatError(f"Tracking database {path} is a directory, not an MLflow SQLite file; check --tracking-uri.")
    if must_exist and not path.is_file():
        raise KdgatError(
            f"Tracking database {path} does not exist; check --tracking-uri, {ENV_TRACKING_URI} or kdgat.toml."
        )
    return path


# Tracking stores other than a SQLite file: PostgreSQL as MLflow (SQLAlchemy) and libpq spell it; MLflow servers.
_PG_SCHEME = re.compile(r"^(postgresql|postgres)(\+[a-z0-9_]+)?://", re.IGNORECASE)
_SERVER_SCHEME = re.compile(r"^(https?|databricks|file)[:+]", re.IGNORECASE)


def is_postgres_uri(uri: str) -> bool:
    return bool(_PG_SCHEME.match(uri or ""))


def is_server_uri(uri: str) -> bool:
    """An MLflow tracking server (or another non-database URI): writers can use it, a reader cannot."""
    return bool(_SERVER_SCHEME.match(uri or ""))


def libpq_dsn(uri: str) -> str:
    """A PostgreSQL URI as libpq takes it: without SQLAlchemy's +driver part."""
    return _PG_SCHEME.sub("postgresql://", uri, count=1)


def mask_uri(uri: str) -> str:
    """The URI with its password replaced by *** (for messages, `kdgat doctor` and the TUI's title)."""
    try:
        parts = urllib.parse.urlsplit(uri)
        password = parts.password
    except ValueError:
        return uri
    out = uri
    if password:
        netloc = parts.netloc.replace(":" + password + "@", ":***@", 1)
        out = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", out)  # libpq also takes ?password=...


def mask_secret(text: str, uri: str) -> str:
    """`text` (an error message) with the URI's password, wherever it appears, replaced by ***."""
    try:
        password = urllib.parse.urlsplit(uri).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
        unquoted = urllib.parse.unquote(password)
        if unquoted != password:
            text = text.replace(unquoted, "***")
    return re.sub(r"(?i)(password=)[^&\s\"']*", r"\1***", text)


_READ_URI_FLAG: list[str] = []  # `kdgat --read-uri URI ...` (set by the CLI's callback)


def set_read_uri_flag(uri: str | None) -> None:
    _READ_URI_FLAG[:] = [uri] if uri else []


def read_uri_flag() -> str | None:
    return _READ_URI_FLAG[0] if _READ_URI_FLAG else None


def resolve_read_uri(flag: str | None = None, settings: Settings | None = None) -> Resolved | None:
    """--read-uri > KDGAT_READ_URI > kdgat.toml ([tracking] read_uri): the database readers open when writers go
    through an MLflow server; None when none is set (readers then use the tracking URI)."""
    flag = flag or read_uri_flag()
    if flag:
        return Resolved(flag, "the --read-uri flag")
    env = os.environ.get(ENV_READ_URI)
    if env:
        return Resolved(env, f"the {ENV_READ_URI} environment variable")
    settings = settings or load_settings()
    uri = settings.section("tracking").get("read_uri")
    if uri:
        return Resolved(_settings_uri(str(uri), settings), f"{settings.path} ([tracking] read_uri)")
    return None


def resolve_data_root(flag: str | None = None, settings: Settings | None = None) -> Resolved:
    """--data-root > KDGAT_DATA_ROOT > kdgat.toml ([data] root) > ../shared/data next to the checkout > ./data."""
    if flag:
        return Resolved(flag, "the --data-root flag")
    env = os.environ.get(ENV_DATA_ROOT)
    if env:
        return Resolved(env, f"the {ENV_DATA_ROOT} environment variable")
    settings = settings or load_settings()
    root = settings.section("data").get("root")
    if root:
        p = Path(str(root))
        if not p.is_absolute() and settings.path is not None:
            p = (settings.path.parent / p).resolve()
        return Resolved(str(p), f"{settings.path}")
    shared = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    if shared.is_dir():
        return Resolved(str(shared), "the shared data folder beside the checkout")
    return Resolved(str(Path.cwd() / "data"), "the built-in default")


def resolve_cache_dir(settings: Settings | None = None) -> Path:
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env)
    settings = settings or load_settings()
    d = settings.section("data").get("cache_dir")
    if d:
        p = Path(str(d))
        return p if p.is_absolute() or settings.path is None else settings.path.parent / p
    return Path.home() / ".cache" / "kdgat"
