"""What a partition's nodes can give a job, from one `sinfo` call, and why a request could never run there.

sbatch accepts a job that asks for more CPUs, memory, GPUs or time than any node of its partition has; it then waits
in the queue for good (reason PartitionConfig, Resources...). kdgat checks the request first and says in one sentence
what is missing and what the partition has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


@dataclass
class NodeCapacity:
    """One node as sinfo lists it under one partition."""

    partition: str
    node: str
    cpus: int
    mem_mb: int
    gpus: dict[str, int]  # gpu type ("" for untyped) -> count
    time_limit_min: int | None  # the partition's MaxTime; None = infinite
    default: bool = False

    @property
    def gpu_count(self) -> int:
        return sum(self.gpus.values())


def parse_sinfo(text: str) -> list[NodeCapacity]:
    """Lines of `sinfo -h -N -o %P|%N|%c|%m|%G|%l`."""
    out = []
    for line in text.splitlines():
        f = line.strip().split("|")
        if len(f) < 6 or not f[2].strip().isdigit():
            continue
        partition = f[0].strip()
        mem = re.match(r"\d+", f[3].strip())
        out.append(
            NodeCapacity(
                partition=partition.rstrip("*"),
                node=f[1].strip(),
                cpus=int(f[2]),
                mem_mb=int(mem.group()) if mem else 0,
                gpus=parse_gres_gpus(f[4]),
                time_limit_min=minutes(f[5]),
                default=partition.endswith("*"),
            )
        )
    return out


def parse_gres_gpus(gres: str) -> dict[str, int]:
    """`gpu:2`, `gpu:a100:4(S:0-1)`, `gpu:a100:2,gpu:v100:1` or `(null)` -> {type: count}."""
    out: dict[str, int] = {}
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = item.strip().split(":")
        if not parts or parts[0] != "gpu":
            continue
        count = parts[-1] if len(parts) > 1 and parts[-1].isdigit() else "1"
        kind = parts[1] if len(parts) == 3 else ""
        out[kind] = out.get(kind, 0) + int(count)
    return out


def minutes(text: str) -> int | None:
    """A SLURM time (`infinite`, `30`, `1:30:00`, `2-00:00:00`, `UNLIMITED`) in whole minutes; None = no limit."""
    text = text.strip()
    if not text or text.lower() in ("infinite", "unlimited", "none", "partition_limit", "n/a"):
        return None
    days, _, clock = text.rpartition("-")
    if days and not days.isdigit():
        return None
    parts = [int(p) for p in clock.split(":") if p.isdigit()]
    if not parts or len(parts) != len(clock.split(":")):
        return None
    seconds = 0
    if days:  # days-hours[:minutes[:seconds]]
        seconds = int(days) * 86400 + parts[0] * 3600 + sum(v * u for v, u in zip(parts[1:], (60, 1)))
    elif len(parts) == 1:  # minutes
        seconds = parts[0] * 60
    elif len(parts) == 2:  # minutes:seconds
        seconds = parts[0] * 60 + parts[1]
    else:  # hours:minutes:seconds
        seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return -(-seconds // 60)


def mem_mb(text: str) -> int:
    """`128G`, `4000M`, `4000` (MB) -> megabytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", text.strip().upper())
    if not m:
        return 0
    return int(float(m.group(1)) * _UNITS[m.group(2) or "M"])


def requested_gpus(gres: str | None) -> tuple[str, int]:
    """(type, count) a gres request asks for; ("", 0) without GPUs."""
    if not gres:
        return "", 0
    for kind, count in parse_gres_gpus(gres).items():
        return kind, count
    return "", 0


def _mem_text(mb: int) -> str:
    return f"{mb / 1024:.1f}G".replace(".0G", "G") if mb >= 1024 else f"{mb}M"


def unmet_request(
    *,
    partition: str | None,
    cpus: int,
    mem: str,
    gres: str | None,
    time: str,
    nodes: list[NodeCapacity],
) -> str | None:
    """One sentence naming what no node of the partition can give, and what the partition has; None if a node fits."""
    if not nodes:
        return None  # sinfo said nothing usable: leave the decision to sbatch
    names = [p.strip() for p in partition.split(",")] if partition else []
    if names:
        known = sorted({n.partition for n in nodes})
        missing = [p for p in names if p not in known]
        if missing and len(missing) == len(names):
            return f"There is no partition {missing[0]} on this cluster; partitions: {', '.join(known)}."
        candidates = [n for n in nodes if n.partition in names]
        where = f"partition {','.join(names)}"
    else:
        candidates = [n for n in nodes if n.default] or nodes
        where = f"the default partition {candidates[0].partition}"
    want_mb, (gpu_kind, want_gpus), want_min = mem_mb(mem), requested_gpus(gres), minutes(time)

    def fits(n: NodeCapacity) -> bool:
        gpus = n.gpus.get(gpu_kind, 0) if gpu_kind else n.gpu_count
        return (
            n.cpus >= cpus
            and (want_mb == 0 or n.mem_mb >= want_mb)
            and gpus >= want_gpus
            and (want_min is None or n.time_limit_min is None or n.time_limit_min >= want_min)
        )

    if any(fits(n) for n in candidates):
        return None
    best_cpus = max(n.cpus for n in candidates)
    best_mem = max(n.mem_mb for n in candidates)
    best_gpus = max((n.gpus.get(gpu_kind, 0) if gpu_kind else n.gpu_count) for n in candidates)
    limits = [n.time_limit_min for n in candidates]
    best_min = None if any(m is None for m in limits) else max(m for m in limits if m is not None)
    gpu_word = f"{gpu_kind} GPU" if gpu_kind else "GPU"
    asked, has, fixes = [], [], []
    if cpus > best_cpus:
        asked.append(f"{cpus} CPUs")
        has.append(f"{best_cpus} CPUs")
        fixes.append(f"cpus={best_cpus}")
    if want_mb > best_mem:
        asked.append(f"{mem} of memory")
        has.append(f"{_mem_text(best_mem)} of memory")
        fixes.append(f"mem={best_mem // 1024}G" if best_mem >= 1024 else f"mem={best_mem}M")
    if want_gpus > best_gpus:
        asked.append(f"{want_gpus} {gpu_word}{'s' if want_gpus > 1 else ''}")
        has.append(f"{best_gpus} {gpu_word}s" if best_gpus > 1 else f"{'1' if best_gpus else 'no'} {gpu_word}")
        fixes.append(f"gpus={best_gpus}" if not gpu_kind else "gres=...")
    if want_min is not None and best_min is not None and want_min > best_min:
        asked.append(f"a time limit of {time}")
        has.append(f"a limit of {best_min} minutes")
        fixes.append(f"time={best_min}")
    if not asked:  # each resource alone fits some node, but no single node has them all
        return (
            f"No single node of {where} has {cpus} CPUs, {mem} of memory"
            + (f" and {want_gpus} {gpu_word}s" if want_gpus else "")
            + " at once; ask for less (-R key=value) or another partition."
        )
    return (
        f"No node of {where} can ever run this job: it asks for {' and '.join(asked)}, the largest node has "
        f"{' and '.join(has)}; ask for less (-R {','.join(fixes)}) or set [cluster.resources] in kdgat.toml."
    )
