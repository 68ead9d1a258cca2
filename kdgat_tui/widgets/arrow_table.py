"""A textual-fastdatatable DataTable whose Arrow data can be swapped in place (refresh, sort, filter).

The stock widget wants a new instance for new data (Harlequin remounts one); remounting loses focus and the cursor,
so this one swaps the backend, keeps the cursor on the same run, and takes column widths it is given instead of
measuring 100k cells.
"""
from __future__ import annotations

import pyarrow as pa
from textual.coordinate import Coordinate
from textual_fastdatatable import ArrowBackend, DataTable

# Long values (a run name, an error) are cut rather than widening a column past the screen.
MAX_COLUMN_WIDTH = 40


class ArrowTable(DataTable):
    def __init__(self, table: pa.Table | None = None, widths: list[int] | None = None, **kwargs) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("max_column_content_width", MAX_COLUMN_WIDTH)
        kwargs.setdefault("zebra_stripes", False)
        kwargs["render_markup"] = False  # run names and params are data, never markup
        table = table if table is not None else pa.table({"": pa.array([], pa.string())})
        super().__init__(backend=self._backend(table, widths), **kwargs)

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
        self.backend = self._backend(table, widths)
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

    def update_cell_value(self, row: int, column: int, value) -> None:
        if self.backend is None or not (0 <= row < self.backend.row_count):
            return
        self.backend.update_cell(row, column, value)
        self._update_count += 1
        self.refresh_row(row)
