"""inspector.api_errors: one JSON error shape, documented per operation."""

from __future__ import annotations

from django.core.exceptions import BadRequest
from rest_framework import exceptions

from inspector.api_errors import _one_shape, api_exception_handler
from inspector.params import ParamError


def test_every_error_body_has_a_detail_sentence():
    assert _one_shape({"detail": "Not found."}) == {"detail": "Not found."}
    assert _one_shape(["no classifier is active"]) == {"detail": "no classifier is active"}
    assert _one_shape({"detail": ["a", "b"]}) == {"detail": "a b"}
    shaped = _one_shape({"name": ["This field may not be blank."]})
    assert shaped == {"detail": "name: This field may not be blank.", "name": ["This field may not be blank."]}
    assert _one_shape({"non_field_errors": ["x"]})["detail"] == "x"


def test_a_bad_parameter_is_a_400_naming_it():
    response = api_exception_handler(ParamError("batch", "'²' is not a whole number"), {})
    assert response.status_code == 400
    assert response.data == {"detail": "batch: '²' is not a whole number"}
    assert api_exception_handler(BadRequest("x"), {}).status_code == 400


def test_drf_errors_keep_their_status_and_gain_the_shape():
    response = api_exception_handler(exceptions.ValidationError("no classifier is active"), {})
    assert (response.status_code, response.data) == (400, {"detail": "no classifier is active"})
    assert api_exception_handler(exceptions.NotFound(), {}).status_code == 404
    assert api_exception_handler(ValueError("not an API error"), {}) is None
