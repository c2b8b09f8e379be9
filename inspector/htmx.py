"""One URL, two renderings: the full page, or (for htmx) its polled partial."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers

HTMX_STOP_POLLING = 286


def render_polled(
    request: HttpRequest, page: str, partial: str, context: dict, *, finished: bool, reload_when_finished: bool = False
) -> HttpResponse:
    """The page, or for an htmx request the partial; once `finished`, the partial tells htmx to stop polling
    (status 286) and, with reload_when_finished, to reload the page (parts of it depend on the new state)."""
    if request.htmx:
        response = render(request, partial, context)
        if finished:
            response.status_code = HTMX_STOP_POLLING
            if reload_when_finished:
                response["HX-Refresh"] = "true"
    else:
        response = render(request, page, context)
    patch_vary_headers(response, ["HX-Request"])  # caches must keep the two renderings apart
    return response
