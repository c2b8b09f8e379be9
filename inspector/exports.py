"""CSV writing for every export (statistics, per-image exports, the audit log): one formula-injection-safe
writer and one streaming HTTP response. Ground floor: imports no app."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from django.http import StreamingHttpResponse

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"


def csv_cell(value: object) -> object:
    """Neutralise spreadsheet formula injection: text starting with = + - @ (or tab/CR) gets a leading '.
    Numbers are written as numbers."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_lines(header: Iterable[str], rows: Iterable[Iterable]) -> Iterator[str]:
    """The header, then one line per row, every cell through csv_cell."""
    writer = csv.writer(_Echo())
    yield writer.writerow(list(header))
    for row in rows:
        yield writer.writerow([csv_cell(v) for v in row])


def attachment(filename: str) -> str:
    """A Content-Disposition value that makes the browser save the response as `filename`."""
    return f'attachment; filename="{filename}"'


def csv_response(filename: str, header: Iterable[str], rows: Iterable[Iterable]) -> StreamingHttpResponse:
    """A streamed CSV download (rows are read lazily: a large export never sits in memory)."""
    response = StreamingHttpResponse(csv_lines(header, rows), content_type=CSV_CONTENT_TYPE)
    response["Content-Disposition"] = attachment(filename)
    return response
