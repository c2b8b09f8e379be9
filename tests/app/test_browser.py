"""The main path in a real headless Chromium (Debian's package), driven by Playwright."""

from __future__ import annotations

from django.db import connections

from inspector.inspections import services as inspection_services
from inspector.inspections.models import Inspection
from inspector.inspections.tasks import inspection_process_task

from .chromium import BROWSER_MARKS
from .factories import TeamFactory, UserFactory, png_bytes

pytestmark = BROWSER_MARKS


def test_log_in_create_product_upload_support_and_batch_watch_progress_open_heatmap(
    page, live_server, tmp_path, monkeypatch
):
    user = UserFactory(username="qa", password="pw-for-tests-123")
    TeamFactory(members=[user])
    support = []
    for i in range(2):
        path = tmp_path / f"good{i}.png"
        path.write_bytes(png_bytes(i))
        support.append(str(path))
    parts = []
    for i, defect in enumerate([False, True, False]):
        path = tmp_path / f"part{i}.png"
        path.write_bytes(png_bytes(10 + i, defect=defect))
        parts.append(str(path))

    page.goto(f"{live_server.url}/")
    page.get_by_label("User name").fill("qa")
    page.get_by_label("Password").fill("pw-for-tests-123")
    page.get_by_role("button", name="Log in").click()

    page.get_by_label("Name").fill("Bottle")
    page.get_by_role("button", name="Create product").click()
    page.get_by_label("Upload good images").set_input_files(support)
    page.get_by_role("button", name="Upload and fit").click()
    page.get_by_test_id("support-status").filter(has_text="ready").wait_for()

    # Hold the queue so the progress bar is seen moving: the tasks run below, while the page polls.
    queued: list[int] = []
    monkeypatch.setattr(inspection_process_task, "delay", queued.append)
    page.get_by_label("Images or .zip").set_input_files(parts)
    page.get_by_label("Lot (optional)").fill("L-42")
    page.get_by_role("button", name="Upload and inspect").click()
    page.get_by_test_id("progress-text").filter(has_text="0 processed").wait_for()
    assert len(queued) == 3
    for inspection_id in queued:
        inspection_services.inspection_process(inspection_id=inspection_id)
    # Under Playwright's event loop the ORM keeps a connection per context: close it, or it outlives the test.
    connections.close_all()
    page.get_by_test_id("batch-finished").wait_for()  # htmx polling brought it in, no reload
    assert page.locator("#batch-progress").get_attribute("value") == "3"

    page.locator("a.result").first.click()
    heatmap = page.locator("#heatmap")
    heatmap.wait_for()
    assert heatmap.evaluate("img => img.complete && img.naturalWidth > 0")
    page.keyboard.press("h")
    assert heatmap.evaluate("img => getComputedStyle(img).opacity") == "0"
    assert page.get_by_test_id("verdict").inner_text() in {v for v, _ in Inspection.Verdict.choices}
