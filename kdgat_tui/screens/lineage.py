"""Lineage (l): per dataset, teacher runs -> their distilled students, stage by stage (autoencoder -> curriculum ->
fusion -> evaluation), each node with its key metric and the student - teacher delta; enter opens the run."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Static, Tree

from kdgat_core.config import PIPELINE_ORDER, Metric, metric_direction
from kdgat_tui.screens.base import KdgatScreen

KEY_METRIC = {"autoencoder": Metric.AUC.value}  # the VGAE logs no F1: it is judged by AUC


@dataclass
class LineageLoaded(Message):
    edges: pa.Table
    alt: pa.Table | None  # the AUC edges, for the autoencoder stage when the key metric is F1


class LineageScreen(KdgatScreen):
    STATUS_LINE, ERROR_PREFIX = "#lineage-title", "lineage"
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("enter", "open", "Open run", show=True),
        Binding("m", "metric", "Metric", tooltip="Switch the key metric (f1, auc, accuracy, ...)"),
    ]
    METRICS = (Metric.F1.value, Metric.AUC.value, Metric.ACCURACY.value, Metric.MCC.value, Metric.VAL_LOSS.value)

    def __init__(self, dataset: str | None = None, run_id: str | None = None, metric: str = Metric.F1.value) -> None:
        super().__init__()
        self.dataset, self.run_id, self.metric = dataset, run_id, metric

    def compose(self) -> ComposeResult:
        yield Static("lineage · loading…", classes="screen-title", id="lineage-title", markup=False)
        yield Tree("runs", id="lineage-tree")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(Tree).focus()
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="lineage")
    def load(self) -> None:
        source = self.app.source
        # the whole dataset's lineage; the run (if any) only decides where the cursor starts
        edges = source.lineage(dataset=self.dataset, metric=self.metric)
        alt = None
        if self.metric == Metric.F1.value:
            alt = source.lineage(dataset=self.dataset, metric=KEY_METRIC["autoencoder"])
        self.post_message(LineageLoaded(edges, alt))

    def on_lineage_loaded(self, message: LineageLoaded) -> None:
        edges, alt = message.edges, message.alt
        scope = self.dataset or "all datasets"
        self.query_one("#lineage-title", Static).update(
            f"lineage · {scope} · teacher → distilled student · Δ = student − teacher · m metric"
        )
        tree = self.query_one(Tree)
        tree.clear()
        tree.root.set_label(Text(f"{edges.num_rows} teacher → student links", style="bold"))
        rows = edges.to_pylist()
        alt_rows = {r["student_run_id"]: r for r in (alt.to_pylist() if alt is not None else [])}
        first_student, any_student = None, None
        for dataset in sorted({r["dataset"] or "?" for r in rows}):
            dnode = tree.root.add(Text(dataset, style="bold"), expand=True)
            for stage in [s.value for s in PIPELINE_ORDER] + sorted(
                {r["stage"] for r in rows} - {s.value for s in PIPELINE_ORDER}
            ):
                stage_rows = [r for r in rows if (r["dataset"] or "?") == dataset and r["stage"] == stage]
                if not stage_rows:
                    continue
                snode = dnode.add(Text(stage, style="italic"), expand=True)
                teachers: dict[str, object] = {}
                for r in stage_rows:
                    metric, row = self.metric, r
                    if (
                        r.get(f"teacher_{metric}") is None
                        and r.get(f"student_{metric}") is None
                        and r["student_run_id"] in alt_rows
                    ):
                        metric, row = KEY_METRIC.get(stage, metric), alt_rows[r["student_run_id"]]
                    tid = r["teacher_run_id"]
                    if tid not in teachers:
                        label = _node(
                            r.get("teacher_name") or "(teacher not in view)", tid, metric, row.get(f"teacher_{metric}")
                        )
                        teachers[tid] = snode.add(label, data=tid, expand=True)
                    leaf = teachers[tid].add_leaf(
                        _node(
                            r["student_name"],
                            r["student_run_id"],
                            metric,
                            row.get(f"student_{metric}"),
                            row.get(f"delta_{metric}"),
                        ),
                        data=r["student_run_id"],
                    )
                    any_student = any_student or leaf
                    if first_student is None and self.run_id in (r["student_run_id"], tid):
                        first_student = leaf
        tree.root.expand()
        target = first_student or any_student
        if target is not None:
            # the cursor starts on the run the user came from, else on the first student
            self.call_after_refresh(tree.move_cursor, target)
        elif not rows:
            tree.root.add_leaf(Text("no distilled students yet (runs with a teacher_run_id tag)", style="dim"))

    def action_open(self) -> None:
        node = self.query_one(Tree).cursor_node
        if node is not None and node.data:
            self.app.open_run(str(node.data))

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        event.stop()
        if event.node.data:
            self.app.open_run(str(event.node.data))

    def action_metric(self) -> None:
        i = self.METRICS.index(self.metric) if self.metric in self.METRICS else -1
        self.metric = self.METRICS[(i + 1) % len(self.METRICS)]
        self.load()


def _node(name: str, run_id: str | None, metric: str, value, delta=None) -> Text:
    text = Text(f"{name} ", style="")
    text.append(f"{(run_id or '')[:8]} ", style="dim")
    if value is not None:
        text.append(f"{metric}={value:.4f}")
    if delta is not None:
        better = (delta < 0) if metric_direction(metric) == "asc" else (delta > 0)
        text.append(f"  Δ {delta:+.4f}", style="green" if better else "red")
    return text
