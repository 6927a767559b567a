"""A DataTable fed with (key, values) rows: updates in place, keeps the cursor, fits the terminal."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.widgets import DataTable

from mdtui.system.text import distinct_cuts
from mdtui.tui.text import visible
from mdtui.tui.widgets.cells import Column, cell_width, fit_columns, render_cell

SCROLLBAR = 1  # the vertical scrollbar of a full table (app.tcss: scrollbar-size-vertical)


class SyncTable(DataTable):
    """Rows are (key, values); only changed cells are redrawn; columns follow width and content."""

    COLUMNS: ClassVar[tuple[Column, ...]] = ()
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g,home", "first", "First", show=False),
        Binding("G,end", "last", "Last", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, cell_padding=0, **kwargs)
        self._rows: dict[str, tuple[Any, ...]] = {}
        self._order: list[str] = []
        self._layout: list[tuple[Column, int]] = []
        self._content: dict[str, int] = {}
        self._cuts: dict[str, dict[str, str]] = {}  # middle-cut columns: value -> what fits, all distinct
        self.selected: set[str] = set()

    # ------------------------------------------------------------------ layout

    def on_mount(self) -> None:
        self._relayout(self.size.width or 100)

    def on_resize(self, event: events.Resize) -> None:
        self._relayout(event.size.width)

    def _layout_for(self, width: int) -> list[tuple[Column, int]]:
        return fit_columns(self.COLUMNS, max(20, width - SCROLLBAR), self._content)

    def _set_columns(self, layout: list[tuple[Column, int]]) -> None:
        self._layout = layout
        self.clear(columns=True)
        for column, col_width in layout:
            label = render_cell(Text(column.label, style="bold"), col_width, column.right)
            self.add_column(label, key=column.key, width=col_width)

    def _relayout(self, width: int) -> None:
        layout = self._layout_for(width)
        if layout == self._layout:
            return
        current = self.current_key()
        rows = [(key, self._rows[key]) for key in self._order]
        self._set_columns(layout)
        self._rebuild(rows, current)

    def _measure(self, rows: list[tuple[str, tuple[Any, ...]]]) -> bool:
        """Record the widest value per column; True when that changes the layout's inputs."""
        sized = [i for i, c in enumerate(self.COLUMNS[1:]) if c.fit or c.elastic]
        content = {
            self.COLUMNS[i + 1].key: max((cell_width(values[i]) for _, values in rows), default=0)
            for i in sized
        }
        if content == self._content:
            return False
        self._content = content
        return True

    @property
    def shown_columns(self) -> list[str]:
        return [column.key for column, _ in self._layout]

    def column_width(self, key: str) -> int:
        return next((w for c, w in self._layout if c.key == key), 0)

    # ------------------------------------------------------------------ cursor and selection

    def action_first(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)

    def current_key(self) -> str | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    def keys(self) -> list[str]:
        return list(self._order)

    def toggle_selected(self) -> None:
        key = self.current_key()
        if key is None:
            return
        self.selected ^= {key}
        self._set_cell(key, "sel")
        if self.cursor_row < len(self._order) - 1:
            self.move_cursor(row=self.cursor_row + 1)

    def clear_selection(self) -> None:
        marked, self.selected = self.selected, set()
        for key in marked:
            self._set_cell(key, "sel")

    def chosen(self) -> list[str]:
        """The selected rows in table order, or the row under the cursor when none is selected."""
        if self.selected:
            return [k for k in self._order if k in self.selected]
        key = self.current_key()
        return [key] if key else []

    # ------------------------------------------------------------------ data

    def _value(self, key: str, column: str) -> Any:
        if column == "sel":
            return Text("●", style="bold magenta") if key in self.selected else ""
        index = [c.key for c in self.COLUMNS].index(column) - 1
        return self._rows[key][index]

    def _render(self, key: str, column: Column, width: int) -> Text:
        value = self._value(key, column.key)
        if column.middle and isinstance(value, str):
            value = self._cuts.get(column.key, {}).get(visible(value), value)
        return render_cell(value, width, column.right, column.middle)

    def _recut(self) -> None:
        """Cut names so that rows that differ still look different (sweep points differ anywhere)."""
        keys = [c.key for c in self.COLUMNS]
        self._cuts = {}
        for column, width in self._layout:
            if column.middle:
                index = keys.index(column.key) - 1
                values = [visible(v[index]) for v in self._rows.values() if isinstance(v[index], str)]
                self._cuts[column.key] = distinct_cuts(values, width - 1)

    def _set_cell(self, key: str, column: str) -> None:
        for col, width in self._layout:
            if col.key == column and key in self._rows and key in self._order:
                self.update_cell(key, column, self._render(key, col, width))

    def _rebuild(self, rows: list[tuple[str, tuple[Any, ...]]], current: str | None) -> None:
        self.clear()
        self._rows = dict(rows)
        self._order = [key for key, _ in rows]
        if not self._layout:
            return
        self._recut()
        for key, _ in rows:
            self.add_row(*(self._render(key, c, w) for c, w in self._layout), key=key)
        if current in self._rows:
            self.move_cursor(row=self._order.index(current), animate=False)

    def restore(self, selected: set[str], current: str | None) -> None:
        """Select ``selected`` again and put the cursor on ``current``, as far as those rows are shown."""
        self.selected |= selected & set(self._order)
        for key in selected & set(self._order):
            self._set_cell(key, "sel")
        if current in self._order:
            self.move_cursor(row=self._order.index(current), animate=False)

    def sync(self, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Show ``rows``; rebuild only when the keys, their order or the column widths changed."""
        order = [key for key, _ in rows]
        self.selected &= set(order)
        if self._measure(rows) and self.is_mounted:
            layout = self._layout_for(self.size.width or 100)
            if layout != self._layout:
                current = self.current_key()
                self._set_columns(layout)
                self._rebuild(rows, current)
                return
        if order != self._order:
            # the cursor follows its row, except at the top: there it stays on the newest run
            self._rebuild(rows, self.current_key() if self.cursor_row > 0 else None)
            return
        names = [c.key for c in self.COLUMNS][1:]
        middle = [i for i, c in enumerate(self.COLUMNS[1:]) if c.middle]
        if any(self._rows[k][i] != v[i] for k, v in rows for i in middle):
            self._rebuild(rows, self.current_key())  # a name changed: the distinct cuts may change
            return
        shown = set(self.shown_columns)
        for key, values in rows:
            old = self._rows.get(key)
            if old == values:
                continue
            self._rows[key] = values
            for i, column in enumerate(names):
                if (old is None or old[i] != values[i]) and column in shown:
                    self._set_cell(key, column)
