"""The Content Security Policy in a real Chromium: every main page loads, runs its scripts and htmx, and the
browser reports no violation (securitypolicyviolation events and console errors both watched)."""

from __future__ import annotations

from django.db import connections
from django.urls import reverse

from inspector.review.defect_types import defect_type_create

from .chromium import BROWSER_MARKS
from .factories import ProductFactory, TeamFactory, UserFactory
from .test_review_browser import log_in, no_capture
from .test_review_views import flagged_batch

pytestmark = BROWSER_MARKS

WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile));
"""


def test_main_pages_run_under_the_policy_without_a_violation(page, live_server):
    user = UserFactory(username="qa", password="pw-for-tests-123")
    product = ProductFactory(team=TeamFactory(members=[user]), name="Bottle")
    batch = flagged_batch(user=user, product=product, n=2, capture=no_capture, lot="L-1")
    defect_type_create(product=product, name="crack")
    inspection = batch.inspections.first()
    # Under Playwright's event loop the ORM keeps a connection per context: close it, or it outlives the test.
    connections.close_all()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    page.add_init_script(WATCH)

    page.goto(f"{live_server.url}/login/")  # the log-in page, then a session for the rest
    _assert_clean(page, console, "login")
    log_in(page, live_server, user)
    connections.close_all()  # the session log_in wrote: same reason as above
    pages = {
        "products": reverse("product-list"),
        "product": reverse("product-detail", args=[product.pk]),
        "batch": reverse("batch-detail", args=[batch.pk]),
        "inspection": reverse("inspection-detail", args=[inspection.pk]),
        "review": reverse("review", args=[product.pk]),
        "grid": reverse("review-grid", args=[product.pk]),
        "defect types": reverse("defect-types", args=[product.pk]),
        "classifier": reverse("classifier", args=[product.pk]),
        "stats": reverse("product-stats", args=[product.pk]),
        "tokens": reverse("account-tokens"),
    }
    for name, url in pages.items():
        response = page.goto(f"{live_server.url}{url}")
        assert response.status == 200, name
        assert "unsafe-inline" not in response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")
        if name in ("review", "inspection"):
            page.keyboard.press("h")  # scripts that change styles through the DOM are allowed
        _assert_clean(page, console, name)
    page.get_by_label("Name").fill("camera")
    page.get_by_role("button", name="Create token").click()
    page.get_by_test_id("new-token").wait_for()
    _assert_clean(page, console, "token created")


def _assert_clean(page, console: list[str], name: str) -> None:
    violations = page.evaluate("window.__csp")
    assert violations == [], f"{name}: {violations}"
    assert console == [], f"{name}: {console}"
