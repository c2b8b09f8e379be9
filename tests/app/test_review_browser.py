"""The review loop in a real headless Chromium (Debian's package), driven by Playwright with the keyboard."""

from __future__ import annotations

import csv
import io
import time
from contextlib import nullcontext

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client
from django.urls import NoReverseMatch, reverse

from inspector.inspections.models import Inspection
from inspector.review import services as review_services
from inspector.review.defect_types import defect_type_create

from .chromium import BROWSER_MARKS
from .factories import ProductFactory, TeamFactory, UserFactory
from .test_review_views import flagged_batch

pytestmark = BROWSER_MARKS


def no_capture(execute: bool):
    return nullcontext()  # live_server tests commit for real: on-commit work runs at once


def log_in(page, live_server, user) -> None:
    """A session made by Django's test client, handed to the browser (the login form has its own test)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])


def shown(page) -> str:
    return page.locator(".review-item").get_attribute("data-item") or ""


def wait_for_item(page, inspection: Inspection) -> None:
    page.locator(f'.review-item[data-item="{inspection.pk}"]').wait_for()


def state(inspection: Inspection) -> tuple[str, str | None, str | None]:
    row = Inspection.objects.select_related("confirmed_type", "reviewed_by").get(pk=inspection.pk)
    return (
        row.reviewed_verdict,
        row.confirmed_type.name if row.confirmed_type else None,
        row.reviewed_by.username if row.reviewed_by else None,
    )


def test_review_a_batch_with_the_keyboard_then_bulk_assign_in_the_grid_then_export(page, live_server):
    user = UserFactory(username="reviewer")
    rival = UserFactory(username="rival")
    team = TeamFactory(members=[user, rival])
    product = ProductFactory(team=team, name="Bottle")
    batch = flagged_batch(user=user, product=product, n=6, capture=no_capture, lot="L-7")
    for name in ("scratch", "dent", "stain"):  # keys 1, 2, 3
        defect_type_create(product=product, name=name)
    parts = list(batch.inspections.order_by("id"))  # all "review", no prediction: the queue is upload order
    connections.close_all()
    log_in(page, live_server, user)
    page.on("dialog", lambda dialog: dialog.accept("crack"))

    page.goto(f"{live_server.url}{reverse('review', args=[product.pk])}?batch={batch.pk}")
    wait_for_item(page, parts[0])
    assert "1 of 6" in page.get_by_test_id("queue-position").inner_text()
    legend = page.get_by_test_id("key-legend").inner_text()
    assert all(word in legend for word in ("scratch", "dent", "stain", "good part", "new defect type", "undo"))

    # From here on: the keyboard only.
    page.keyboard.press("Enter")  # nothing chosen and no machine type to confirm: a hint, no decision
    page.get_by_test_id("review-alert").filter(has_text="Nothing to confirm").wait_for()
    assert shown(page) == str(parts[0].pk)

    page.keyboard.press("h")
    assert page.locator("#review-heat").evaluate("img => getComputedStyle(img).opacity") == "0"
    page.keyboard.press("h")
    page.keyboard.press("+")
    assert "scale(1.25)" in page.locator("#review-zoom").evaluate("el => el.style.transform")
    page.keyboard.press("-")

    page.keyboard.press("1")
    assert "pending" in page.locator('[data-choice="type"][data-key="1"]').get_attribute("class")
    page.keyboard.press("Enter")
    wait_for_item(page, parts[1])
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    wait_for_item(page, parts[2])
    page.keyboard.press("g")
    page.keyboard.press("Enter")
    wait_for_item(page, parts[3])
    page.keyboard.press("n")  # the dialog handler names it "crack"; it becomes key 4 and the pending choice
    page.locator('[data-choice="type"][data-key="4"].pending').filter(has_text="crack").wait_for()
    page.keyboard.press("Enter")
    wait_for_item(page, parts[4])
    assert state(parts[3]) == ("defective", "crack", "reviewer")

    page.keyboard.press("Backspace")  # undo the crack: the image comes back, unreviewed, leased to me
    wait_for_item(page, parts[3])
    assert page.get_by_test_id("current-decision").inner_text() == "not reviewed yet"
    assert state(parts[3]) == ("", None, None)
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    wait_for_item(page, parts[4])

    page.keyboard.press("ArrowRight")
    wait_for_item(page, parts[5])
    page.keyboard.press("ArrowLeft")
    wait_for_item(page, parts[4])

    # Another reviewer decides the image on screen meanwhile: my decision is refused, nothing moves.
    review_services.review_decide(inspection_id=parts[4].pk, user=rival, verdict="good", expected_version=0)
    connections.close_all()
    page.keyboard.press("3")
    page.keyboard.press("Enter")
    page.get_by_test_id("review-alert").filter(has_text="was changed by rival").wait_for()
    assert shown(page) == str(parts[4].pk)

    assert [state(p) for p in parts[:5]] == [
        ("defective", "scratch", "reviewer"),
        ("defective", "dent", "reviewer"),
        ("good", None, "reviewer"),
        ("defective", "scratch", "reviewer"),
        ("good", None, "rival"),
    ]

    # Grid mode: tick part04, shift-click part05 (a range of two), assign "stain" to both.
    page.goto(f"{live_server.url}{reverse('review-grid', args=[product.pk])}?batch={batch.pk}&reviewed=all")
    cards = page.get_by_test_id("grid-card")
    assert cards.count() == 6
    cards.nth(4).locator('input[name="items"]').click()
    cards.nth(5).locator('input[name="items"]').click(modifiers=["Shift"])
    assert page.get_by_test_id("selected-count").inner_text() == "2 selected"
    page.get_by_label("Defect type").select_option(label="stain")
    page.get_by_role("button", name="Assign type").click()
    page.get_by_text("2 of 2 images marked defective: stain").wait_for()
    assert state(parts[4]) == ("defective", "stain", "reviewer")
    assert state(parts[5]) == ("defective", "stain", "reviewer")
    connections.close_all()

    try:
        export = reverse("api-batch-export", args=[batch.pk])
    except NoReverseMatch:
        pytest.skip("the keyboard review and the grid passed; the CSV export is not there yet (api-batch-export)")
    response = page.request.get(f"{live_server.url}{export}")
    assert response.status == 200
    rows = list(csv.DictReader(io.StringIO(response.text())))
    header = {key.lower().replace(" ", "_"): key for key in rows[0]}
    file_col = next(header[k] for k in header if "file" in k or k in ("name", "original_name"))
    type_col = next(header[k] for k in header if "confirmed" in k and "type" in k)
    by_col = next(header[k] for k in header if "reviewer" in k or "reviewed_by" in k)
    exported = {row[file_col]: (row[type_col], row[by_col]) for row in rows}
    assert exported["part00.png"] == ("scratch", "reviewer")
    assert exported["part01.png"] == ("dent", "reviewer")
    assert exported["part02.png"][0] in ("", None) and exported["part02.png"][1] == "reviewer"
    assert exported["part03.png"] == ("scratch", "reviewer")
    assert exported["part04.png"] == ("stain", "reviewer")
    assert exported["part05.png"] == ("stain", "reviewer")


def test_decisions_per_minute_with_the_keyboard(page, live_server):
    """Not a timed assertion: prints how many decisions a minute the UI sustains (key to next image shown)."""
    user = UserFactory(username="fast")
    product = ProductFactory(team=TeamFactory(members=[user]))
    batch = flagged_batch(user=user, product=product, n=1, capture=no_capture)
    defect_type_create(product=product, name="scratch")
    source = batch.inspections.get()
    # 20 more flagged rows through the ORM, sharing the processed image's files (the detector is not timed here).
    Inspection.objects.bulk_create(
        Inspection(
            batch=batch,
            support_set=source.support_set,
            image=source.image.name,
            heatmap=source.heatmap.name,
            nearest_support=source.nearest_support,
            original_name=f"fast{k:02d}.png",
            checksum=f"{k:064x}",
            width=source.width,
            height=source.height,
            status=Inspection.Status.DONE,
            verdict=Inspection.Verdict.REVIEW,
            score=source.score,
        )
        for k in range(20)
    )
    source.delete()
    ids = list(batch.inspections.order_by("id").values_list("id", flat=True))
    connections.close_all()
    log_in(page, live_server, user)
    page.goto(f"{live_server.url}{reverse('review', args=[product.pk])}")
    page.locator(f'.review-item[data-item="{ids[0]}"]').wait_for()

    start = time.perf_counter()
    for k in range(len(ids)):
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        if k + 1 < len(ids):
            page.locator(f'.review-item[data-item="{ids[k + 1]}"]').wait_for()
    page.get_by_test_id("queue-empty").wait_for()
    seconds = time.perf_counter() - start

    per_minute = 60 * len(ids) / seconds
    print(f"\nreview UI: {len(ids)} decisions in {seconds:.2f} s = {per_minute:.0f} decisions per minute")
    decided = Inspection.objects.filter(pk__in=ids, reviewed_verdict="defective", confirmed_type__name="scratch")
    assert decided.count() == len(ids)
