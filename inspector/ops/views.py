from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from inspector.ops import metrics, selectors


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and readiness for load balancers and container health checks: no login, no secrets, 503 when the
    database, the broker or the media storage does not answer."""
    checks = selectors.health_checks()
    ok = all(c.ok for c in checks.values())
    body = {
        "status": "ok" if ok else "error",
        "checks": {name: {"ok": c.ok, "detail": c.detail, "ms": round(c.ms, 1)} for name, c in checks.items()},
    }
    return JsonResponse(body, status=200 if ok else 503)


def _metrics_allowed(request: HttpRequest) -> bool | None:
    """True: allowed; False: authenticated but not allowed (403); None: no credentials (401)."""
    token = settings.INSPECTOR_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return bool(token) and hmac.compare_digest(header.removeprefix("Bearer ").encode(), token.encode())
    if request.user.is_authenticated:
        return request.user.is_staff
    return None


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics for staff users or a scraper with `Authorization: Bearer $INSPECTOR_METRICS_TOKEN`."""
    allowed = _metrics_allowed(request)
    if allowed is None:
        response = HttpResponse("authentication required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not allowed:
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(metrics.render(), content_type=CONTENT_TYPE_LATEST)
