"""Lineage (l): per dataset, teacher runs -> their distilled students, stage by stage (autoencoder -> curriculum ->
fusion -> evaluation), each node with its key metric and the student - teacher delta, then the retry chains (kdgat
resubmit), each retry under the run it retries; enter opens the run."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Static, Tree
from textual.widgets.tree import TreeNode

from kdgat_core.config import PIPELINE_ORDER, RETRY_MARK, Metric, metric_direction, retry_label
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
        all_rows = edges.to_pylist()
        rows = [r for r in all_rows if r.get("link", "kd") == "kd"]
        retry_rows = [r for r in all_rows if r.get("link") == "retry"]
        label = f"{len(rows)} teacher → student links"
        tree.root.set_label(Text(label + (f" · {len(retry_rows)} retries" if retry_rows else ""), style="bold"))
        alt_rows = {(r.get("link", "kd"), r["student_run_id"]): r for r in (alt.to_pylist() if alt is not None else [])}
        first_student, any_student = None, None
        for dataset in sorted({r["dataset"] or "?" for r in all_rows}):
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
                    metric, row = self._metric_row(r, stage, alt_rows)
                    tid = r["teacher_run_id"]
                    if tid not in teachers:
                        label = _node(
                            r.get("teacher_name") or "(teacher not in view)", tid, metric, row.get(f"teacher_{metric}")
                        )
                        teachers[tid] = snode.add(label, data=tid, expand=True)
                    text = _node(
                        r["student_name"],
                        r["student_run_id"],
                        metric,
                        row.get(f"student_{metric}"),
                        row.get(f"delta_{metric}"),
                    )
                    if r.get("retry_of"):
                        text.append(f"  {retry_label(r['retry_of'])}", style="yellow")
                    leaf = teachers[tid].add_leaf(text, data=r["student_run_id"])
                    any_student = any_student or leaf
                    if first_student is None and self.run_id in (r["student_run_id"], tid):
                        first_student = leaf
            chains = [r for r in retry_rows if (r["dataset"] or "?") == dataset]
            if chains:
                rnode = dnode.add(Text(f"{RETRY_MARK} retries", style="italic"), expand=True)
                placed: dict[str, TreeNode] = {}
                for r in chains:  # chain by chain, in attempt order: the retried run is always placed first
                    metric, row = self._metric_row(r, r["stage"], alt_rows)
                    parent = r["teacher_run_id"]
                    if parent not in placed and parent.startswith("job "):
                        text = Text(f"{parent} (it died before opening a run)", style="dim")
                        placed[parent] = rnode.add(text, expand=True)
                    elif parent not in placed:
                        text = _node(r.get("teacher_name") or "", parent, metric, row.get(f"teacher_{metric}"))
                        text.append(f" {r.get('teacher_status') or ''}", style="dim")
                        placed[parent] = rnode.add(text, data=parent, expand=True)
                    text = _node(r["student_name"] or "", r["student_run_id"], metric, row.get(f"student_{metric}"))
                    text.append(f" {r.get('student_status') or ''}", style="dim")
                    text.append(f"  {retry_label(parent)}", style="yellow")
                    node = placed[parent].add(text, data=r["student_run_id"], expand=True)
                    placed[r["student_run_id"]] = node
                    any_student = any_student or node
                    if first_student is None and self.run_id in (r["student_run_id"], parent):
                        first_student = node
        tree.root.expand()
        target = first_student or any_student
        if target is not None:
            # the cursor starts on the run the user came from, else on the first student
            self.call_after_refresh(_move_cursor, tree, target)
        elif not all_rows:
            tree.root.add_leaf(Text("no distilled students yet (runs with a teacher_run_id tag)", style="dim"))

    def _metric_row(self, r: dict, stage: str, alt_rows: dict) -> tuple[str, dict]:
        """The row's own metric, or the stage's key metric (AUC for the VGAE) when the chosen one is missing."""
        key = (r.get("link", "kd"), r["student_run_id"])
        if r.get(f"teacher_{self.metric}") is None and r.get(f"student_{self.metric}") is None and key in alt_rows:
            return KEY_METRIC.get(stage, self.metric), alt_rows[key]
        return self.metric, r

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


def _move_cursor(tree: Tree, node: TreeNode) -> None:
    """`tree.move_cursor`, once the tree has numbered its lines again (reading `last_line` does it): a node added
    since is at line -1 until then, and the cursor would land on the root."""
    if tree.last_line >= 0:
        tree.move_cursor(node)


def _node(name: str, run_id: str | None, metric: str, value, delta=None) -> Text:
    text = Text(f"{name} ", style="")
    text.append(f"{(run_id or '')[:8]} ", style="dim")
    if value is not None:
        text.append(f"{metric}={value:.4f}")
    if delta is not None:
        better = (delta < 0) if metric_direction(metric) == "asc" else (delta > 0)
        text.append(f"  Δ {delta:+.4f}", style="green" if better else "red")
    return text
