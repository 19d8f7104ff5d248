"""Read the routing panel's rows out of its HTML, as the browser test reads the page."""

from __future__ import annotations

import re
from html.parser import HTMLParser


class _Rows(HTMLParser):
    """Collect ``{data-field: text}`` for each ``<tr>`` of a class."""

    def __init__(self, row_class: str) -> None:
        super().__init__()
        self.row_class = row_class
        self.rows: list[dict[str, str]] = []
        self._field: str | None = None
        self._in_row = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and self.row_class in (found.get("class") or "").split():
            self._in_row = True
            self.rows.append({})
        elif tag == "td" and self._in_row:
            self._field = found.get("data-field")
            if self._field is not None:
                self.rows[-1][self._field] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._field = None
        elif tag == "tr":
            self._in_row = False

    def handle_data(self, data: str) -> None:
        if self._in_row and self._field is not None:
            self.rows[-1][self._field] += data


def rows(html: str, row_class: str) -> list[dict[str, str]]:
    """The rows of class ``row_class``, each cell's text with its whitespace collapsed."""
    parser = _Rows(row_class)
    parser.feed(html)
    return [
        {name: re.sub(r"\s+", " ", text).strip() for name, text in row.items()}
        for row in parser.rows
    ]


def blocks(html: str) -> list[dict[str, str]]:
    """The block rows."""
    return rows(html, "dynroute-block")


def queries(html: str) -> list[dict[str, str]]:
    """The query rows."""
    return rows(html, "dynroute-query")


def events(html: str) -> list[dict[str, str]]:
    """The signal rows."""
    return rows(html, "dynroute-event")
