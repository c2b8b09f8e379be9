"""One URL, two renderings: the full page, or (for htmx) a partial of it; polled partials stop with 286."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers

HTMX_STOP_POLLING = 286


def render_htmx(request: HttpRequest, page: str, partial: str, context: dict, *, status: int = 200) -> HttpResponse:
    """The page, or for an htmx request the partial (the same context renders both)."""
    response = render(request, partial if request.htmx else page, context, status=status)
    patch_vary_headers(response, ["HX-Request"])  # caches must keep the two renderings apart
    return response


def render_polled(
    request: HttpRequest, page: str, partial: str, context: dict, *, finished: bool, reload_when_finished: bool = False
) -> HttpResponse:
    """render_htmx for a polled partial: once `finished`, the partial tells htmx to stop polling (status 286) and,
    with reload_when_finished, to reload the page (parts of it depend on the new state)."""
    response = render_htmx(request, page, partial, context)
    if request.htmx and finished:
        response.status_code = HTMX_STOP_POLLING
        if reload_when_finished:
            response["HX-Refresh"] = "true"
    return response
