"""inspector.params: strict parsing of query and form parameters (issue 20's 500s came from lenient parsing)."""

from __future__ import annotations

from datetime import date

import pytest
from django.core.exceptions import BadRequest

from inspector.params import (
    DB_INT_MAX,
    DbIdConverter,
    ParamError,
    bool_param,
    choice_param,
    date_param,
    int_param,
)


@pytest.mark.parametrize("value", ["\u00b2", "\u2460", "\u0663", "1.5", "1e3", "-1", "+1", "0x10", "1 2", "abc"])
def test_int_param_refuses_what_is_not_ascii_digits(value):
    with pytest.raises(ParamError) as caught:
        int_param({"batch": value}, "batch")
    assert caught.value.name == "batch"
    assert "not a whole number" in str(caught.value) or "out of range" in str(caught.value)


def test_int_param_is_a_bad_request_for_pages():
    assert issubclass(ParamError, BadRequest)


def test_int_param_bounds_to_the_database_integer_range():
    assert int_param({"batch": str(DB_INT_MAX)}, "batch") == DB_INT_MAX
    with pytest.raises(ParamError, match="out of range"):
        int_param({"batch": str(DB_INT_MAX + 1)}, "batch")
    with pytest.raises(ParamError):
        int_param({"batch": "168879006213617976105685221376"}, "batch")
    with pytest.raises(ParamError, match="out of range"):
        int_param({"page": "0"}, "page")


def test_int_param_absent_takes_the_default_and_blank_is_an_error_unless_allowed():
    assert int_param({}, "page", default=1) == 1
    with pytest.raises(ParamError, match="empty"):
        int_param({"page": ""}, "page", default=1)
    assert int_param({"page": " "}, "page", default=1, blank_ok=True) == 1
    assert int_param({"page": " 7 "}, "page") == 7


def test_int_param_takes_negative_numbers_only_when_the_bounds_allow_them():
    assert int_param({"x": "-3"}, "x", minimum=-5, maximum=5) == -3
    with pytest.raises(ParamError):
        int_param({"x": "-3"}, "x")


def test_date_param_is_strict_iso():
    assert date_param({"from": "2025-03-31"}, "from") == date(2025, 3, 31)
    for bad in ["20250331", "2025-02-30", "31/03/2025", "2025-3-1", "\u0662\u0660\u0662\u0665-01-01"]:
        with pytest.raises(ParamError, match="YYYY-MM-DD"):
            date_param({"from": bad}, "from")
    with pytest.raises(ParamError, match="empty"):
        date_param({"to": ""}, "to")
    assert date_param({"to": ""}, "to", blank_ok=True) is None


def test_choice_and_bool_params():
    assert choice_param({"bucket": "week"}, "bucket", {"day", "week"}) == "week"
    assert choice_param({}, "bucket", {"day", "week"}, default="day") == "day"
    with pytest.raises(ParamError, match="not one of day, week"):
        choice_param({"bucket": "month"}, "bucket", {"day", "week"})
    assert bool_param({"audit": "true"}, "audit") is True
    assert bool_param({"audit": "0"}, "audit", default=True) is False
    with pytest.raises(ParamError, match="yes/no"):
        bool_param({"audit": "maybe"}, "audit")


def test_id_converter_refuses_ids_beyond_the_database_range():
    converter = DbIdConverter()
    assert converter.to_python("42") == 42
    assert converter.to_python(str(DB_INT_MAX)) == DB_INT_MAX
    with pytest.raises(ValueError):
        converter.to_python(str(DB_INT_MAX + 1))
    import re

    assert re.fullmatch(converter.regex, "168879006213617976105685221376") is None
    assert converter.to_url(7) == "7"


def test_is_db_id_only_for_ascii_ids_the_database_can_hold():
    from inspector.params import is_db_id

    assert is_db_id("42") and is_db_id(7) and is_db_id(str(DB_INT_MAX))
    for bad in ["\u00b2", "\u2460", "0", "-1", "", None, "1.0", str(DB_INT_MAX + 1), "168879006213617976105685221376"]:
        assert not is_db_id(bad), bad
    assert is_db_id("0", minimum=0) and not is_db_id("-1", minimum=0)
