"""Query-string and form parameters, parsed strictly in one place (ground floor: imports no app).

Every view and API reads its integers, dates, choices and booleans through these helpers, so a bad value is a 400
with a message that names the parameter, never a 500 and never silently a default:
- integers are ASCII digits only: `str.isdigit()` is true for "²" or "①", which `int()` then refuses (a 500 found
  by fuzzing), and every integer is bounded (ids by the database's 32-bit range);
- a parameter that is absent takes its default; one that is present but blank is an error unless the caller says
  blanks mean "not set" (`blank_ok=True`, for HTML filter forms whose "all" option submits an empty value).

`ParamError` is Django's `BadRequest`, so pages answer 400 by themselves; the API's exception handler
(`inspector.api_errors`) turns it into the JSON error body.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import date

from django.core.exceptions import BadRequest

DB_INT_MAX = 2**31 - 1  # PostgreSQL `integer` (Django's AutoField on this project's tables)
_DIGITS = re.compile(r"[0-9]+")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ParamError(BadRequest):
    """A query or form parameter that cannot be used; `str()` is the message for the user."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        super().__init__(f"{name}: {message}")


def _raw(query: Mapping, name: str, *, blank_ok: bool) -> str | None:
    """The stripped value, or None when absent (or blank and blanks are allowed)."""
    value = query.get(name)
    if value is None:
        return None
    value = str(value).strip()
    if not value:
        if blank_ok:
            return None
        raise ParamError(name, "is empty: leave the parameter out for the default")
    return value


def parse_int(value: str, *, name: str, minimum: int = 1, maximum: int = DB_INT_MAX) -> int:
    """An integer from ASCII digits within [minimum, maximum] (a leading '-' for negative bounds)."""
    text = str(value).strip()
    digits = text[1:] if text.startswith("-") and minimum < 0 else text
    if not _DIGITS.fullmatch(digits) or len(digits) > 19:
        raise ParamError(name, f"{text[:40]!r} is not a whole number")
    number = int(text)
    if not minimum <= number <= maximum:
        raise ParamError(name, f"{number} is out of range ({minimum} to {maximum})")
    return number


def int_param(
    query: Mapping,
    name: str,
    *,
    default: int | None = None,
    minimum: int = 1,
    maximum: int = DB_INT_MAX,
    blank_ok: bool = False,
) -> int | None:
    raw = _raw(query, name, blank_ok=blank_ok)
    return default if raw is None else parse_int(raw, name=name, minimum=minimum, maximum=maximum)


def parse_date(value: str, *, name: str) -> date:
    text = str(value).strip()
    if _ISO_DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise ParamError(name, f"{text[:40]!r} is not a date: use YYYY-MM-DD (e.g. 2025-03-31)")


def date_param(query: Mapping, name: str, *, default: date | None = None, blank_ok: bool = False) -> date | None:
    raw = _raw(query, name, blank_ok=blank_ok)
    return default if raw is None else parse_date(raw, name=name)


def choice_param(
    query: Mapping, name: str, choices: Collection[str], *, default: str | None = None, blank_ok: bool = False
) -> str | None:
    raw = _raw(query, name, blank_ok=blank_ok)
    if raw is None:
        return default
    if raw not in choices:
        raise ParamError(name, f"{raw[:40]!r} is not one of {', '.join(sorted(choices))}")
    return raw


def bool_param(query: Mapping, name: str, *, default: bool = False, blank_ok: bool = False) -> bool:
    raw = _raw(query, name, blank_ok=blank_ok)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ParamError(name, f"{raw[:40]!r} is not a yes/no value (true or false)")


class DbIdConverter:
    """URL converter `<id:name>`: an object id the database can hold. Larger numbers do not match the pattern, so
    they answer 404 like any unknown id, instead of reaching the query (OverflowError, or PostgreSQL's DataError)."""

    regex = "[0-9]{1,10}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > DB_INT_MAX:
            raise ValueError(f"{value} is beyond the database's integer range")  # no match: 404
        return number

    def to_url(self, value: int | str) -> str:
        return str(value)


def is_db_id(value: object, *, minimum: int = 1) -> bool:
    """True for ASCII digits naming an integer the database can hold (minimum .. DB_INT_MAX; versions start at 0):
    the safe test before `int()` where a page ignores a value it cannot use (a filter left over in a bookmark)."""
    try:
        parse_int("" if value is None else str(value), name="id", minimum=minimum)
    except ParamError:
        return False
    return True
