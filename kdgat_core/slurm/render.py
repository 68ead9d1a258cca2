"""Render a stage's sbatch script from `slurm_templates/` (Jinja2, StrictUndefined) and one PipelineConfig.

The body runs `cfg.run_command()`, shell-quoted word by word, so the job trains exactly the configuration the
preview showed. Values on `#SBATCH` lines are validated (resources.py); values in the shell body are quoted.
"""

from __future__ import annotations

import functools
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdgat_core.config import (
    ARTIFACT_ROOT_DIR,
    PREPROCESS_JOB,
    KdgatError,
    PipelineConfig,
    Settings,
    Stage,
    dataset_spec,
    load_settings,
    resolve_tracking_uri,
    sqlite_path,
)
from kdgat_core.slurm.resources import Resources, check, resolve_resources

TEMPLATE_SUFFIX = ".sh.j2"
BASE_TEMPLATE = "base" + TEMPLATE_SUFFIX
# Inside the package (a symlink to the top-level slurm_templates/ in a checkout, real files in a wheel).
PACKAGE_TEMPLATES = Path(__file__).resolve().parent / "templates"
CHECKOUT_TEMPLATES = Path(__file__).resolve().parents[2] / "slurm_templates"
# The one intended expansion in a script: an array task's index becomes the run's seed.
ARRAY_SEED_OVERRIDE = "train.seed=${SLURM_ARRAY_TASK_ID}"
JOB_LOG_NAME = "slurm-%j"
ARRAY_LOG_NAME = "slurm-%A_%a"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,100}")


@dataclass
class ClusterSettings:
    """The `[cluster]` section of kdgat.toml: how jobs set up their environment and where templates live."""

    templates: Path | None = None  # a folder of the user's own templates, searched before the package's
    modules: list[str] = field(default_factory=list)
    module_purge: bool = False
    setup: list[str] = field(default_factory=list)  # shell lines copied verbatim: the user's own code
    venv: str | None = None
    conda_env: str | None = None
    exports: dict[str, str] = field(default_factory=dict)
    kdgat: str | None = None  # the kdgat executable jobs run (default: the one running now)
    executor: str = "auto"  # auto (sbatch when it exists) | slurm | local
    workdir: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ClusterSettings:
        settings = settings or load_settings()
        section = settings.section("cluster")
        base = settings.path.parent if settings.path is not None else Path.cwd()
        where = f"{settings.path or 'kdgat.toml'} [cluster]"

        def strings(key: str) -> list[str]:
            value = section.get(key, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise KdgatError(f"{where}: '{key}' must be a list of strings.")
            return list(value)

        exports = section.get("exports", {})
        if not isinstance(exports, dict):
            raise KdgatError(f"{where}: 'exports' must be a table of NAME = \"value\".")
        for name in exports:
            if not _ENV_NAME.fullmatch(name):
                raise KdgatError(f"{where}: '{name}' is not a valid environment variable name.")
        executor = str(section.get("executor", "auto"))
        if executor not in ("auto", "slurm", "local"):
            raise KdgatError(f"{where}: executor must be auto, slurm or local, not '{executor}'.")
        templates = section.get("templates")
        folder = None
        if templates:
            folder = Path(str(templates)).expanduser()
            folder = folder if folder.is_absolute() else (base / folder)
            if not folder.is_dir():
                raise KdgatError(f"{where}: templates folder {folder} does not exist.")
        return cls(
            templates=folder,
            modules=strings("modules"),
            module_purge=bool(section.get("module_purge", False)),
            setup=strings("setup"),
            venv=str(section["venv"]) if section.get("venv") else None,
            conda_env=str(section["conda_env"]) if section.get("conda_env") else None,
            exports={k: str(v) for k, v in exports.items()},
            kdgat=str(section["kdgat"]) if section.get("kdgat") else None,
            executor=executor,
            workdir=str(section["workdir"]) if section.get("workdir") else None,
            raw=section,
        )


def template_dirs(cluster: ClusterSettings | None = None) -> list[Path]:
    """The user's folder first (so one file can be overridden), then the templates shipped with kdgat."""
    dirs = [cluster.templates] if cluster is not None and cluster.templates is not None else []
    for folder in (PACKAGE_TEMPLATES, CHECKOUT_TEMPLATES):
        if (folder / BASE_TEMPLATE).is_file() and folder.resolve() not in [d.resolve() for d in dirs]:
            dirs.append(folder)
    if not dirs:
        raise KdgatError(
            f"No sbatch templates found (looked in {PACKAGE_TEMPLATES}); reinstall kdgat or set [cluster] templates."
        )
    return dirs


@functools.lru_cache(maxsize=8)
def _environment(dirs: tuple[Path, ...]) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        undefined=jinja2.StrictUndefined,  # a missing variable is an error, never an empty string
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["q"] = lambda value: shlex.quote(str(value))
    return env


def render_template(name: str, variables: Mapping[str, Any], cluster: ClusterSettings | None = None) -> str:
    import jinja2

    env = _environment(tuple(template_dirs(cluster)))
    try:
        return env.get_template(name).render(**variables)
    except jinja2.UndefinedError as exc:
        raise KdgatError(f"Template {name} uses a variable kdgat does not provide ({exc.message}).") from None
    except jinja2.TemplateNotFound as exc:
        raise KdgatError(f"No template {exc.name} in {', '.join(str(d) for d in template_dirs(cluster))}.") from None
    except jinja2.TemplateSyntaxError as exc:
        raise KdgatError(f"Template {exc.filename or name} line {exc.lineno}: {exc.message}.") from None


def absolute_tracking_uri(tracking_uri: str | None = None, settings: Settings | None = None) -> str:
    """The URI a job exports: a sqlite path made absolute (the job's working directory may differ)."""
    uri = resolve_tracking_uri(tracking_uri, settings).value
    path = sqlite_path(uri, must_exist=False)
    if path is None:
        return uri
    return f"sqlite:///{path.expanduser().resolve()}"


def artifact_root(tracking_uri: str | None = None, settings: Settings | None = None) -> Path:
    """`experimentruns/` next to the tracking DB: where the tracking writer puts runs and jobs write their logs."""
    uri = absolute_tracking_uri(tracking_uri, settings)
    path = sqlite_path(uri, must_exist=False)
    base = path.parent if path is not None else Path.cwd()
    return (base / ARTIFACT_ROOT_DIR).resolve()


def default_kdgat_executable() -> str:
    """The kdgat next to the running interpreter (a venv's bin/), so jobs run the same installation."""
    candidate = Path(sys.executable).parent / "kdgat"
    return str(candidate) if candidate.is_file() else "kdgat"


def run_command_line(cfg: PipelineConfig, executable: str, array: str | None = None) -> str:
    """`kdgat run ...` for the script body, every word quoted; an array job's seed is the one expansion."""
    words = " ".join(shlex.quote(word) for word in cfg.run_command(executable))
    if array:
        words += f' -O "{ARRAY_SEED_OVERRIDE}"'
    return words


@dataclass
class RenderedJob:
    """One job ready for the scheduler: its script and where its logs go."""

    cfg: PipelineConfig
    script: str
    run_name: str
    folder: Path  # experimentruns/<dataset>/<size>_<stage>[_kd]/
    output: str  # with %j (or %A_%a): the scheduler fills in the job id
    error: str
    resources: Resources
    array: str | None
    template: str
    variant: str | None = None  # the preset variant whose resource defaults applied (tiny, cpu)


def preprocess_command(cfg: PipelineConfig, executable: str) -> list[str]:
    """`kdgat graphs <dataset> ...` with the data settings of `cfg`: builds the graph cache the stages will read."""
    d = cfg.data
    return [
        executable,
        "graphs",
        cfg.dataset,
        "--window",
        str(d.window),
        "--stride",
        str(d.stride),
        "--max-messages",
        str(d.max_messages),
        "--val-fraction",
        str(d.val_fraction),
    ]


def prepare_job(
    cfg: PipelineConfig,
    resources: Mapping[str, Any] | Resources | None = None,
    settings: Settings | None = None,
    *,
    array: str | None = None,
    tracking_uri: str | None = None,
    workdir: str | None = None,
    preprocess: bool = False,
    variant: str | None = None,
    exports: Mapping[str, str] | None = None,
) -> RenderedJob:
    """Validate everything that goes into the script, then render the stage's template.

    With preprocess=True the job is the pipeline's data preparation (`kdgat graphs`), not `cfg.stage`."""
    settings = settings or load_settings()
    cluster = ClusterSettings.from_settings(settings)
    stage = Stage.parse(cfg.stage, "stage")
    dataset_spec(cfg.dataset, settings)  # an unknown dataset fails here, not hours later in the queue
    kind = PREPROCESS_JOB if preprocess else stage.value
    if isinstance(resources, Resources):
        res = resources.validated()
    else:
        res = resolve_resources(kind, cfg.model_size, cluster.raw, resources, variant=variant)
    if array is not None:
        if preprocess:
            raise KdgatError("A preprocessing job has no seeds to spread over an array.")
        array = check("array", array.strip(), "array")
    run_name = f"{cfg.dataset}/{PREPROCESS_JOB}" if preprocess else cfg.run_name
    name = check("job_name", run_name, "job name (the run name)")
    folder = artifact_root(tracking_uri, settings) / run_name
    log_name = ARRAY_LOG_NAME if array else JOB_LOG_NAME
    output = check("path", f"{folder}/{log_name}.out", "log path")
    error = check("path", f"{folder}/{log_name}.err", "log path")
    template = f"{kind}{TEMPLATE_SUFFIX}"
    executable = cluster.kdgat or default_kdgat_executable()
    if preprocess:
        command = " ".join(shlex.quote(w) for w in preprocess_command(cfg, executable))
    else:
        command = run_command_line(cfg, executable, array)
    from kdgat_core import __version__

    variables = {
        "job": {
            "name": name,
            "run_name": run_name,
            "output": output,
            "error": error,
            "array": array,
            "dataset": cfg.dataset,
            "stage": kind,
            "model_size": cfg.model_size,
            "kd": cfg.kd.enabled,
        },
        "resources": res.to_dict(),
        "env": {
            "modules": cluster.modules,
            "module_purge": cluster.module_purge,
            "setup": cluster.setup,
            "venv": cluster.venv,
            "conda_env": cluster.conda_env,
            "exports": {**cluster.exports, **dict(exports or {})},
        },
        "tracking_uri": absolute_tracking_uri(tracking_uri, settings),
        "workdir": workdir or cluster.workdir or str(Path.cwd()),
        "command": command,
        "kdgat_version": __version__,
        "template_name": template,
    }
    script = render_template(template, variables, cluster)
    return RenderedJob(
        cfg=cfg,
        script=script,
        run_name=run_name,
        folder=folder,
        output=output,
        error=error,
        resources=res,
        array=array,
        template=template,
        variant=variant,
    )


def render_sbatch(
    cfg: PipelineConfig,
    resources: Mapping[str, Any] | Resources | None = None,
    settings: Settings | None = None,
    **kwargs: Any,
) -> str:
    """The sbatch script for one stage's run (see prepare_job for the keyword options)."""
    return prepare_job(cfg, resources, settings, **kwargs).script
