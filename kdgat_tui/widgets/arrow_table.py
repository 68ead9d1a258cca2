"""A textual-fastdatatable DataTable whose Arrow data can be swapped in place (refresh, sort, filter).

The stock widget wants a new instance for new data (Harlequin remounts one); remounting loses focus and the cursor,
so this one swaps the backend, keeps the cursor on the same run, and takes column widths it is given instead of
measuring 100k cells.
"""

from __future__ import annotations

import pyarrow as pa
from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.coordinate import Coordinate
from textual_fastdatatable import ArrowBackend, DataTable

# Long values (a run name, an error) are cut rather than widening a column past the screen.
MAX_COLUMN_WIDTH = 40
CELL_PADDING = 2  # one space either side of every cell (textual_fastdatatable's CELL_X_PADDING)
# combined cell styles by (styles, row, column): bounded, a screenful needs a few thousand
_STYLES: dict[tuple, Style] = {}
MAX_STYLES = 50_000


class ArrowTable(DataTable):
    # cell values shown in their own style, per column header (`lost` in the status column)
    COMPONENT_CLASSES = DataTable.COMPONENT_CLASSES | {"arrow-table--lost"}
    DEFAULT_CSS = """
    ArrowTable > .arrow-table--lost {
        color: $error;
        text-style: bold;
    }
    """

    def __init__(
        self,
        table: pa.Table | None = None,
        widths: list[int] | None = None,
        styled_values: dict[str, dict[str, str]] | None = None,
        fit_right_edge: bool = False,
        prefix_columns: frozenset[str] = frozenset(),
        **kwargs,
    ) -> None:
        self.styled_values = styled_values or {}  # header -> {cell value: component class}
        # widen the last whole column so no column shows cut at the right edge (a header read as `val_lo`)
        self.fit_right_edge = fit_right_edge
        self.prefix_columns = prefix_columns  # headers whose values read fine cut short (ids)
        self._shown: tuple[pa.Table, list[int] | None] | None = None  # what replace() was given
        self._fitted_widths: list[int] | None = None
        self._styled_columns: dict[int, dict[str, str]] = {}
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("max_column_content_width", MAX_COLUMN_WIDTH)
        kwargs.setdefault("zebra_stripes", False)
        kwargs["render_markup"] = False  # run names and params are data, never markup
        table = table if table is not None else pa.table({"": pa.array([], pa.string())})
        super().__init__(backend=self._backend(table, widths), **kwargs)
        self._find_styled_columns(table)

    def _find_styled_columns(self, table: pa.Table) -> None:
        self._styled_columns = {
            i: self.styled_values[name] for i, name in enumerate(table.column_names) if name in self.styled_values
        }

    @staticmethod
    def _backend(table: pa.Table, widths: list[int] | None) -> ArrowBackend:
        backend = ArrowBackend(table)
        backend.render_markup = False
        if widths is not None and len(widths) == table.num_columns:
            # handing widths over saves measuring every cell of every column on each refresh
            backend._column_content_widths = [min(w, MAX_COLUMN_WIDTH) for w in widths]
        return backend

    def replace(self, table: pa.Table, widths: list[int] | None = None, cursor_row: int | None = None) -> None:
        """Show new data; the cursor goes to `cursor_row` (clamped) or stays where it is."""
        row = self.cursor_row if cursor_row is None else cursor_row
        column = self.cursor_column
        same_columns = self.backend is not None and list(self.backend.columns) == table.column_names
        self._shown = (table, widths)
        widths = self._fitted(table, widths)
        self._fitted_widths = widths
        self.backend = self._backend(table, widths)
        self._find_styled_columns(table)
        if not same_columns:
            self._column_labels = None
        self._ordered_columns = None
        self._clear_caches()
        self._update_count += 1
        self._require_update_dimensions = True
        self._update_dimensions([])
        if table.num_rows:
            target = Coordinate(max(0, min(row, table.num_rows - 1)), max(0, min(column, table.num_columns - 1)))
            if target != self.cursor_coordinate:
                self.cursor_coordinate = target
            else:
                self._highlight_row(target.row)
        self.refresh(layout=True)

    def _viewport_width(self, table: pa.Table, widths: list[int]) -> int:
        """Cells left for the columns once the vertical scrollbar (if the rows need one) takes its share."""
        width, height = self.size
        total = sum(widths) + CELL_PADDING * len(widths)
        bar_v, bar_h = self.styles.scrollbar_size_vertical, self.styles.scrollbar_size_horizontal
        rows = table.num_rows + 1  # and the header
        needs_v = rows > height or (total > width and rows > height - bar_h)
        return width - (bar_v if needs_v else 0)

    def _fitted(self, table: pa.Table, widths: list[int] | None) -> list[int] | None:
        if not self.fit_right_edge or widths is None or self.size.width <= 0:
            return widths
        return fit_widths(widths, self._viewport_width(table, widths), table.column_names, self.prefix_columns)

    def on_resize(self) -> None:
        # only when the new size moves the right edge onto another column (not on every height change)
        if self._shown is not None and self._fitted(*self._shown) != self._fitted_widths:
            self.replace(*self._shown)

    def update_cell_value(self, row: int, column: int, value) -> None:
        if self.backend is None or not (0 <= row < self.backend.row_count):
            return
        self.backend.update_cell(row, column, value)
        self._update_count += 1
        self.refresh_row(row)

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
        in_range: bool = False,
    ):
        """A fast path for plain text cells (every cell kdgat shows): one padded segment, no Rich layout pass.

        Rich's Padding/Styled pipeline costs about 0.3 ms a cell, so a sort repainted 160x48 in ~0.2 s; this is what
        that pipeline produces for one line of unstyled text: ` text ` cut to the column with an ellipsis."""
        if row_index < 0 or column_index < 0 or self.backend is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover, in_range)
        key = (
            row_index,
            column_index,
            base_style,
            cursor,
            hover,
            in_range,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        cached = self._cell_render_cache.get(key)
        if cached is not None:
            return cached
        value = self.backend.get_cell_at(row_index, column_index)
        if value is not None and not isinstance(value, str):
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover, in_range)
        text = "" if value is None else value.split("\n", 1)[0]
        fixed = row_index < self.fixed_rows or column_index < self.fixed_columns
        component_style, post_style = self._get_styles_to_render_cell(
            False,
            False,
            fixed,
            hover,
            cursor,
            in_range,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_type == "range",
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        inner = max(width - 2, 0)
        if cell_len(text) > inner:
            text = set_cell_size(text, max(inner - 1, 0)) + "…" if inner else ""
        else:
            text = set_cell_size(text, inner)
        styled = self._styled_columns.get(column_index)
        extra = styled.get(value) if styled else None
        # a screenful repeats the same (styles, row, column) on every filter and sort: combine them once
        style_key = (base_style, component_style, post_style, extra, row_index, column_index)
        style = _STYLES.get(style_key)
        if style is None:
            style = base_style + component_style
            if extra is not None:
                style = style + self.get_component_rich_style(extra, partial=True)
            if post_style is not None:
                style = style + post_style
            style = style + Style.from_meta({"row": row_index, "column": column_index})  # meta: mouse clicks
            if len(_STYLES) > MAX_STYLES:
                _STYLES.clear()
            _STYLES[style_key] = style
        lines = [[Segment(f" {text} " if width >= 2 else text[:width], style)]]
        self._cell_render_cache[key] = lines
        return lines


def fit_widths(
    widths: list[int], viewport: int, headers: list[str], prefix_ok: frozenset[str] = frozenset()
) -> list[int]:
    """Content widths such that no column shows cut at the right edge of a `viewport`-cell table: the column the edge
    would cut starts past it instead (scrolling right shows it whole), and the nearest whole column before it that
    can grow (up to MAX_COLUMN_WIDTH) takes the slack as trailing blanks. A cut header misleads (`val_lo`), and so
    does a cut number (0.1350 read as 0.13); columns in `prefix_ok` (ids) only need their header to fit."""
    widths = [min(w, MAX_COLUMN_WIDTH) for w in widths]
    start = 0
    for i, width in enumerate(widths):
        need = cell_len(headers[i]) if headers[i] in prefix_ok else width
        if start + 1 + need > viewport:  # the text (after the left padding) does not fit
            slack = viewport - start
            if slack <= 0:
                return widths
            for j in range(i - 1, -1, -1):
                if widths[j] + slack <= MAX_COLUMN_WIDTH:
                    return widths[:j] + [widths[j] + slack] + widths[j + 1 :]
            return widths
        start += width + CELL_PADDING
    return widths
