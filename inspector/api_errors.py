"""One error shape for the REST API, documented on every operation (ground floor: imports no app).

Every error the API answers is a JSON object with `detail` (a sentence for a person); a 400 about fields also has
one list of messages per field (`{"detail": "...", "name": ["This field may not be blank."]}`). Three pieces make
that true and visible to a generated client:
- `api_exception_handler` (DRF's EXCEPTION_HANDLER): Django's `BadRequest` (bad query parameters, see
  `inspector.params`) becomes a 400, and every error body is brought to the one shape;
- `bad_request`, `permission_denied`, `not_found`, `server_error` (Django's handler400/403/404/500): JSON for
  paths under /api/ (an unmatched API path is not an HTML page), styled pages elsewhere;
- `ApiSchema` (DRF's DEFAULT_SCHEMA_CLASS): each operation's schema lists the error codes it can answer, with the
  `Error` schema, beside the codes the view declares itself.
"""

from __future__ import annotations

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.views import exception_handler as drf_exception_handler

from inspector.params import ParamError

API_PREFIX = "/api/"


class ErrorOut(serializers.Serializer):
    detail = serializers.CharField(help_text="what went wrong, for a person")


def _one_shape(data: object) -> dict:
    if isinstance(data, dict):
        if isinstance(data.get("detail"), list):  # ValidationError({"detail": ...}) or a list-valued message
            return {**data, "detail": " ".join(str(item) for item in data["detail"])}
        if "detail" in data:
            return data
        first = next(iter(data.values()), None)
        first = first[0] if isinstance(first, list) and first else first
        field = next(iter(data), "")
        return {"detail": f"{field}: {first}" if field and field != "non_field_errors" else str(first), **data}
    if isinstance(data, list):
        return {"detail": " ".join(str(item) for item in data) or "invalid request"}
    return {"detail": str(data)}


def api_exception_handler(exc: Exception, context: dict):
    if isinstance(exc, BadRequest):
        exc = exceptions.ParseError(detail=str(exc))
    response = drf_exception_handler(exc, context)
    if response is not None:
        response.data = _one_shape(response.data)
    return response


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """A bad parameter names itself (`ParamError` messages are written for users); other 400s stay generic."""
    message = str(exception) if isinstance(exception, ParamError) else ""
    if _is_api(request):
        return JsonResponse({"detail": message or "Bad request."}, status=400)
    return render(request, "400.html", {"exception": message}, status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Your role in this team does not allow this."}, status=403)
    return render(request, "403.html", status=403)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": "Server error: the team has been told; try again later."}, status=500)
    return render(request, "500.html", status=500)


class ApiSchema(AutoSchema):
    """AutoSchema plus the error responses every operation can give. Codes a view declares itself win."""

    def _error_codes(self) -> dict[str, str]:
        codes = {"401": "no or invalid credentials", "403": "your role in this team does not allow it"}
        writes = self.method in ("POST", "PUT", "PATCH")
        if writes or any(p.get("in") == "query" for p in self._get_parameters()):
            codes["400"] = "bad input: `detail` says what, field errors list each field"
        if writes:
            codes["415"] = "the request body's content type is not one this operation accepts"
        if "{" in self.path:
            codes["404"] = "no such object, or it belongs to another team"
        return codes

    def _get_response_bodies(self, direction="response"):
        bodies = super()._get_response_bodies(direction)
        for code, description in self._error_codes().items():
            if code not in bodies:
                bodies[code] = self._get_response_for_code(
                    OpenApiResponse(response=ErrorOut, description=description), code, direction=direction
                )
        return dict(sorted(bodies.items()))
