"""What a job asks the scheduler for: defaults per stage and size, kdgat.toml overrides, per-call overrides.

Every value here ends up on an `#SBATCH` line, where it cannot be shell-quoted: each one is checked against a strict
pattern instead, so a newline or a `;` can never smuggle in a directive or a command.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kdgat_core.config import PREPROCESS_JOB, PRESET_VARIANTS, KdgatError, ModelSize, Stage

# Published pipeline: each training stage 6 h, 128 GB, 16 CPUs, 1 GPU; evaluation 2 h, 32 GB, 8 CPUs, 1 GPU;
# preprocessing (window graphs into the cache) needs no GPU: give it a CPU partition in [cluster.resources.preprocess].
_TRAINING = {"time": "06:00:00", "mem": "128G", "cpus": 16, "gpus": 1}
_EVALUATION = {"time": "02:00:00", "mem": "32G", "cpus": 8, "gpus": 1}
_PREPROCESS = {"time": "02:00:00", "mem": "64G", "cpus": 8, "gpus": 0}
DEFAULT_RESOURCES: dict[tuple[str, str], dict[str, Any]] = {
    **{
        (stage.value, size.value): dict(_TRAINING)
        for stage in (Stage.AUTOENCODER, Stage.CURRICULUM, Stage.FUSION)
        for size in ModelSize
    },
    **{(Stage.EVALUATION.value, size.value): dict(_EVALUATION) for size in ModelSize},
    **{(PREPROCESS_JOB, size.value): dict(_PREPROCESS) for size in ModelSize},
}
# A preset variant's models are small: its jobs ask for what they use (a tiny CPU model asks for no GPU), applied over
# the stage default and under kdgat.toml, so a request fits a laptop-sized node and never waits for a GPU it cannot use.
VARIANT_RESOURCES: dict[str, dict[str, Any]] = {
    "tiny": {"time": "00:30:00", "mem": "3G", "cpus": 1, "gpus": 0},
    "cpu": {"time": "02:00:00", "mem": "8G", "cpus": 2, "gpus": 0},
}
assert set(VARIANT_RESOURCES) <= set(PRESET_VARIANTS), "resource defaults for a variant config.py does not define"
JOB_KINDS = (*Stage.values(), PREPROCESS_JOB)  # the sub-tables [cluster.resources.<kind>] may name

# One pattern per directive value; anything else is refused before it reaches a script.
_NAME = r"[A-Za-z0-9_.+-]{1,64}"
PATTERNS: dict[str, re.Pattern[str]] = {
    "partition": re.compile(rf"{_NAME}(,{_NAME})*"),
    "account": re.compile(_NAME),
    "qos": re.compile(_NAME),
    "time": re.compile(r"(\d{1,3}-)?\d{1,4}(:\d{1,2}){0,2}|\d{1,3}-\d{1,2}"),
    "mem": re.compile(r"\d{1,7}[KMGT]?"),
    "gres": re.compile(r"[A-Za-z0-9_]+(:[A-Za-z0-9_.-]+){0,2}(,[A-Za-z0-9_]+(:[A-Za-z0-9_.-]+){0,2})*"),
    "constraint": re.compile(r"[A-Za-z0-9_.&|,\[\]*:!-]{1,128}"),
    "job_name": re.compile(r"[A-Za-z0-9_./+-]{1,200}"),
    "array": re.compile(r"\d{1,6}(-\d{1,6}(:\d{1,4})?)?(,\d{1,6}(-\d{1,6}(:\d{1,4})?)?)*(%\d{1,4})?"),
    "dependency_id": re.compile(r"[A-Za-z]?\d{1,12}(_\d{1,6})?"),
    # paths on #SBATCH lines: no spaces, quotes or shell characters (sbatch would split or misread them)
    "path": re.compile(r"/[A-Za-z0-9_./%+=@,~-]{0,1000}"),
    # a whole extra directive from kdgat.toml, e.g. "--exclusive" or "--mail-type=END"
    "directive": re.compile(r"--[a-z][a-z-]{0,40}(=[A-Za-z0-9_.:,/%=+@-]{1,200})?"),
}
FIELD_HELP = {
    "partition": "partition name(s), e.g. gpu or gpu,debug",
    "account": "an account name",
    "qos": "a QOS name",
    "time": "a SLURM time such as 06:00:00, 90 or 1-12:00:00",
    "mem": "an amount such as 128G or 4000M",
    "gres": "a gres spec such as gpu:1 or gpu:a100:2",
    "constraint": "a node feature expression such as a100|h100",
    "job_name": "letters, digits and . _ / + -",
    "array": "indices such as 0-3, 1,2,3 or 0-9%2",
    "dependency_id": "a job id such as 1234",
    "path": "an absolute path without spaces, quotes or shell characters",
    "directive": "an sbatch option such as --exclusive or --mail-type=END",
}


def check(kind: str, value: Any, what: str | None = None) -> str:
    """`value` as a string if it matches the pattern for `kind`, else a KdgatError naming what was expected."""
    text = str(value)
    if not PATTERNS[kind].fullmatch(text):
        raise KdgatError(f"Refusing {what or kind} {text!r}: expected {FIELD_HELP[kind]}.")
    return text


@dataclass
class Resources:
    """The scheduler request of one job; None means 'leave it to the cluster's default'."""

    time: str = "01:00:00"
    mem: str = "4G"
    cpus: int = 1
    gpus: int = 0
    gres: str | None = None  # overrides gpus when set (e.g. gpu:a100:1)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra: list[str] = field(default_factory=list)  # further `#SBATCH` options, each validated

    def validated(self) -> Resources:
        """A copy with every value checked; raises KdgatError on the first bad one."""
        out = dataclasses.replace(self, extra=list(self.extra))
        out.time = check("time", self.time, "time limit")
        out.mem = check("mem", self.mem, "memory request")
        out.cpus = _positive_int("cpus", self.cpus, minimum=1)
        out.gpus = _positive_int("gpus", self.gpus, minimum=0)
        for name in ("gres", "partition", "account", "qos", "constraint"):
            value = getattr(self, name)
            if value is not None and value != "":
                setattr(out, name, check(name, value))
            else:
                setattr(out, name, None)
        out.extra = [check("directive", d, "extra sbatch directive") for d in self.extra]
        return out

    @property
    def gres_request(self) -> str | None:
        if self.gres:
            return self.gres
        return f"gpu:{self.gpus}" if self.gpus > 0 else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["gres_request"] = self.gres_request
        return d


def _positive_int(name: str, value: Any, minimum: int) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise KdgatError(f"Refusing {name} {value!r}: expected a whole number.") from None
    if number < minimum:
        raise KdgatError(f"Refusing {name} {number}: it must be at least {minimum}.")
    return number


_FIELDS = {f.name for f in dataclasses.fields(Resources)}


def _apply(res: Resources, values: Mapping[str, Any], where: str) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            continue  # a nested table (per stage or size), applied by the caller in its turn
        if key not in _FIELDS:
            raise KdgatError(f"Unknown resource '{key}' in {where}; known: {', '.join(sorted(_FIELDS))}.")
        if key == "extra":
            if isinstance(value, str) or not isinstance(value, (list, tuple)):
                raise KdgatError(f"{where}: 'extra' must be a list of sbatch options.")
            value = [str(v) for v in value]
        setattr(res, key, value)


def parse_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """`--resources mem=8G,time=10` (or repeated options) into a dict; a comma splits only before another `key=`."""
    out: dict[str, str] = {}
    for item in pairs:
        for pair in re.split(r",(?=[a-z_]+=)", item):
            if "=" not in pair:
                raise KdgatError(f"Resource '{pair}' is not of the form key=value (e.g. mem=8G).")
            key, value = pair.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def resolve_resources(
    stage: str | Stage,
    model_size: str | ModelSize,
    cluster: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    variant: str | None = None,
) -> Resources:
    """Built-in default < the preset variant's < [cluster.resources] < [cluster.resources.<stage>] <
    [...<stage>.<size>] < overrides.

    `stage` is a Stage or PREPROCESS_JOB; `variant` the preset's variant (tiny, cpu), if any."""
    stage = str(stage) if str(stage) == PREPROCESS_JOB else Stage.parse(str(stage), "stage").value
    size = ModelSize.parse(str(model_size), "model size").value
    res = Resources()
    _apply(res, DEFAULT_RESOURCES[(stage, size)], "the built-in defaults")
    if variant:
        _apply(res, VARIANT_RESOURCES.get(variant, {}), f"the {variant} preset's defaults")
    table = (cluster or {}).get("resources") or {}
    if not isinstance(table, dict):
        raise KdgatError("kdgat.toml: [cluster.resources] must be a table.")
    for key in table:
        if isinstance(table[key], dict) and key not in JOB_KINDS:
            raise KdgatError(
                f"kdgat.toml: [cluster.resources.{key}] is not a stage; use one of: {', '.join(JOB_KINDS)}."
            )
    _apply(res, table, "kdgat.toml [cluster.resources]")
    per_stage = table.get(stage) or {}
    _apply(res, per_stage, f"kdgat.toml [cluster.resources.{stage}]")
    per_size = per_stage.get(size) or {}
    if isinstance(per_size, dict):
        _apply(res, per_size, f"kdgat.toml [cluster.resources.{stage}.{size}]")
    if overrides:
        _apply(res, overrides, "--resources")
    return res.validated()
