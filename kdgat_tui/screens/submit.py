"""Submit (n): the next stage prefilled from the selected run, the rendered sbatch script shown in full, submitted
only after a confirmation, then visible in Jobs.

On a teacher run: "train a distilled student from this teacher"; on a finished curriculum run: "run fusion"; on a
finished fusion run: "evaluate"; on a failed run: "run it again"; on a dataset: "submit the pipeline".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Static
from textual.worker import Worker

from kdgat_core.config import (
    PARAM_PREFIX,
    STAGE_ARCH,
    KdgatError,
    ModelSize,
    PipelineConfig,
    RunStatus,
    Stage,
    Tag,
    preset,
)
from kdgat_tui.screens.base import KdgatScreen
from kdgat_tui.widgets.dialogs import Confirm, Pick

# What a next stage inherits from the run it follows: how to train and on what data, not the model's size.
INHERITED_PREFIXES = ("train.", "data.")


@dataclass
class Plan:
    """One choice on the Submit screen: what it does, and the configs it submits (a pipeline has several)."""

    title: str
    cfgs: list[PipelineConfig] = field(default_factory=list)
    pipeline_dataset: str | None = None  # set for "submit the pipeline"
    scripts: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    after: list[list[str]] = field(default_factory=list)


def config_of_run(row: dict) -> PipelineConfig:
    """The run's own PipelineConfig, rebuilt from its params (strings, parsed to each field's type)."""
    cfg = preset(
        f"{STAGE_ARCH[Stage(row[Tag.STAGE.value])]},{row[Tag.MODEL_SIZE.value]}", dataset=row[Tag.DATASET.value]
    )
    for key, value in row.items():
        if key.startswith(PARAM_PREFIX) and value is not None:
            try:
                cfg.set(key[len(PARAM_PREFIX) :], str(value))
            except KdgatError:
                continue  # a param this version no longer has: the preset's value stands
    return cfg


def next_stage(row: dict, stage: Stage, size: str, kd: bool, teacher: str = "") -> PipelineConfig:
    """A preset for `stage` at `size`, inheriting the run's training and data settings."""
    base = config_of_run(row)
    cfg = preset(f"{STAGE_ARCH[stage]},{size}", dataset=row[Tag.DATASET.value])
    for key, value in base.flatten().items():
        if key.startswith(INHERITED_PREFIXES):
            cfg.set(key, value, coerce=False)
    cfg.kd.enabled = kd
    cfg.kd.teacher_run_id = teacher if kd else ""
    return cfg


def plans_for_run(row: dict) -> list[Plan]:
    """The actions that make sense after this run, the most likely first."""
    stage = Stage(row[Tag.STAGE.value])
    size = row[Tag.MODEL_SIZE.value]
    kd = str(row.get(Tag.USE_KD.value)) == "True"
    status = row.get(Tag.STATUS.value)
    run_id = row["run_id"]
    plans: list[Plan] = []
    if status in (RunStatus.FAILED.value, RunStatus.LOST.value):
        plans.append(Plan(f"run {row['run_name']} again (it {status})", [config_of_run(row)]))
    if size == ModelSize.TEACHER.value and stage in (Stage.AUTOENCODER, Stage.CURRICULUM, Stage.FUSION):
        plans.append(
            Plan(
                f"train a distilled student {stage.value} from this teacher",
                [next_stage(row, stage, ModelSize.STUDENT.value, True, run_id)],
            )
        )
    follow = {Stage.AUTOENCODER: Stage.CURRICULUM, Stage.CURRICULUM: Stage.FUSION, Stage.FUSION: Stage.EVALUATION}
    if stage in follow and status == RunStatus.COMPLETE.value:
        nxt = follow[stage]
        verb = {Stage.CURRICULUM: "train the curriculum GAT", Stage.FUSION: "run fusion", Stage.EVALUATION: "evaluate"}[
            nxt
        ]
        teacher = "auto" if kd else ""
        plans.append(
            Plan(
                f"{verb} ({size}{', distilled' if kd else ''}) after this run",
                [next_stage(row, nxt, size, kd, teacher)],
            )
        )
    plans.append(
        Plan(
            f"submit the whole pipeline for {row[Tag.DATASET.value]} (teacher, student, distilled student)",
            pipeline_dataset=row[Tag.DATASET.value],
        )
    )
    return plans


@dataclass
class PlanReady(Message):
    plan: Plan  # its scripts rendered (a dry run)


@dataclass
class Submitted(Message):
    job_ids: list[str]


class SubmitScreen(KdgatScreen):
    MUTATING = frozenset({"confirm_submit"})
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("s", "confirm_submit", "Submit…", tooltip="Submit what is shown, after a confirmation"),
        Binding("c", "choose", "Choose action", tooltip="Pick another next step for this run"),
    ]

    def __init__(self, run_id: str | None = None, dataset: str | None = None) -> None:
        super().__init__()
        self.run_id, self.dataset = run_id, dataset
        self.plans: list[Plan] = []
        self.plan: Plan | None = None

    def compose(self) -> ComposeResult:
        yield Static("submit · preparing…", classes="screen-title", id="submit-title", markup=False)
        yield Static("", id="submit-what", classes="section", markup=False)
        yield Static("", id="submit-error", classes="inline-error hidden", markup=False)
        with VerticalScroll(classes="script", id="script-scroll"):
            yield Static("", id="script", markup=False)
        yield Footer()

    def action_state(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.MUTATING:
            return None if self.plan is None or not self.plan.scripts else True  # dimmed until a script is ready
        return True

    def on_mount(self) -> None:
        self.query_one("#script-scroll").focus()
        self.prepare()

    @work(thread=True, exclusive=True, exit_on_error=False, group="submit-prepare")
    def prepare(self, index: int = 0) -> None:
        if not self.plans:
            if self.run_id:
                self.plans = plans_for_run(self.app.source.run_row(self.run_id))
            else:
                dataset = self.dataset or "hcrl_sa"
                self.plans = [
                    Plan(
                        f"submit the whole pipeline for {dataset} (teacher, student, distilled student)",
                        pipeline_dataset=dataset,
                    )
                ]
        plan = self.plans[index]
        render(self.app.slurm, plan, self.app.source.uri)
        self.post_message(PlanReady(plan))

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        """Preparing or submitting failed: the whole reason above the script (a template error can be long)."""
        box = self.query_one("#submit-error", Static)
        box.update(str(error))
        box.remove_class("hidden")
        self.query_one("#submit-title", Static).update("submit · cannot prepare this job")

    def on_plan_ready(self, message: PlanReady) -> None:
        self.plan = plan = message.plan
        self.query_one("#submit-error", Static).add_class("hidden")
        n = len(plan.scripts)
        self.query_one("#submit-title", Static).update(
            f"submit · {plan.title} · {n} job{'s' if n != 1 else ''} · s submit… · c other action"
        )
        lines = []
        for name, after in zip(plan.names, plan.after):
            lines.append(f"{name}" + (f"   (after {', '.join(after)})" if after else ""))
        self.query_one("#submit-what", Static).update("\n".join(lines))
        body = []
        for name, script in zip(plan.names, plan.scripts):
            body.append(f"# ---- {name} " + "-" * max(0, 60 - len(name)))
            body.append(script.rstrip("\n"))
            body.append("")
        self.query_one("#script", Static).update("\n".join(body))
        self.refresh_bindings()

    def action_choose(self) -> None:
        if len(self.plans) < 2:
            self.notify("this is the only next step for this run")
            return
        items = [(str(i), p.title) for i, p in enumerate(self.plans)]
        self.app.push_screen(Pick("Next step", items), self._chosen)

    def _chosen(self, index: str | None) -> None:
        if index is not None:
            self.prepare(int(index))

    def action_confirm_submit(self) -> None:
        if self.app.readonly or self.plan is None or not self.plan.scripts:
            return
        plan = self.plan
        jobs = "\n".join(f"  {n}" for n in plan.names)
        self.app.push_screen(
            Confirm(
                f"Submit {len(plan.names)} job{'s' if len(plan.names) != 1 else ''}?",
                f"{plan.title}\n\n{jobs}\n\nThe scripts are exactly those shown on this screen.",
            ),
            lambda yes: self.submit(plan) if yes else None,
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="submit")
    def submit(self, plan: Plan) -> None:
        slurm, uri = self.app.slurm, self.app.source.uri
        if plan.pipeline_dataset:
            subs = slurm.submit_pipeline(plan.pipeline_dataset, sizes=("teacher", "student"), kd=True, tracking_uri=uri)
            ids = [s.job_id for s in subs]
        else:
            ids = [slurm.submit(cfg, tracking_uri=uri).job_id for cfg in plan.cfgs]
        self.post_message(Submitted(ids))

    def on_submitted(self, message: Submitted) -> None:
        ids = message.job_ids
        self.notify(f"submitted job{'s' if len(ids) != 1 else ''} {', '.join(str(i) for i in ids)}")
        self.app.pop_screen()
        self.app.open_jobs()


def render(slurm, plan: Plan, tracking_uri: str) -> None:
    """Fill the plan's scripts with what would be submitted (a dry run: nothing reaches the scheduler)."""
    if plan.scripts:
        return
    if plan.pipeline_dataset:
        subs = slurm.submit_pipeline(
            plan.pipeline_dataset, sizes=("teacher", "student"), kd=True, dry_run=True, tracking_uri=tracking_uri
        )
    else:
        subs = [slurm.submit(cfg, dry_run=True, tracking_uri=tracking_uri) for cfg in plan.cfgs]
    plan.scripts = [s.job.script for s in subs]
    plan.names = [s.run_name for s in subs]
    plan.after = [list(s.after) for s in subs]
