from __future__ import annotations

import pytest
from django.urls import reverse

from inspector.inspections import services as inspection_services
from inspector.products import services as product_services

from .factories import ProductFactory, png_bytes, upload


@pytest.fixture
def batch(owner, team, django_capture_on_commit_callbacks):
    product = ProductFactory(team=team)
    with django_capture_on_commit_callbacks(execute=True):
        product_services.support_set_create(
            product=product, user=owner, files=[upload("g.png", png_bytes(1)), upload("h.png", png_bytes(2))]
        )
    with django_capture_on_commit_callbacks(execute=True):
        return inspection_services.batch_create(product=product, user=owner, files=[upload("q.png", png_bytes(3))])


def _pages(batch):
    inspection = batch.inspections.get()
    return [
        reverse("product-detail", args=[batch.product_id]),
        reverse("batch-detail", args=[batch.pk]),
        reverse("inspection-detail", args=[inspection.pk]),
        reverse("media", args=[inspection.heatmap.name]),
        reverse("media", args=[inspection.image.name]),
    ]


def test_owner_sees_every_page_of_the_batch(client, owner, batch):
    client.force_login(owner)
    for url in _pages(batch):
        assert client.get(url).status_code == 200, url


def test_other_team_gets_404_on_every_page_and_file(client, other, batch):
    client.force_login(other)
    for url in _pages(batch):
        assert client.get(url).status_code == 404, url


def test_other_team_cannot_upload_to_the_product(client, other, batch):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(other)
    for name in ("support-upload", "batch-upload"):
        url = reverse(name, args=[batch.product_id])
        assert client.post(url, {"images": [SimpleUploadedFile("x.png", png_bytes(9))]}).status_code == 404
    assert batch.product.support_sets.count() == 1 and batch.product.batches.count() == 1


def test_pages_vary_on_hx_request(client, owner, batch):
    client.force_login(owner)
    for url in (reverse("batch-detail", args=[batch.pk]), reverse("product-detail", args=[batch.product_id])):
        assert "HX-Request" in client.get(url)["Vary"]


def test_an_unfinished_batch_keeps_polling(client, owner, batch):
    batch.inspections.update(status="queued")
    client.force_login(owner)
    response = client.get(reverse("batch-detail", args=[batch.pk]), headers={"HX-Request": "true"})
    assert response.status_code == 200 and 'hx-trigger="every 1s"' in response.content.decode()


def test_anonymous_is_sent_to_login(client, batch):
    for url in _pages(batch):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), url


def test_bad_ids_and_unknown_files_are_404(client, owner, batch):
    client.force_login(owner)
    for url in (
        "/products/999999/",
        "/batches/999999/",
        "/inspections/999999/",
        "/media/heatmaps/nope.png",
        "/media/../settings.py",
    ):
        assert client.get(url).status_code == 404, url


def test_wrong_methods_are_405(client, owner, batch):
    client.force_login(owner)
    assert client.post(reverse("batch-detail", args=[batch.pk])).status_code == 405
    assert client.get(reverse("batch-upload", args=[batch.product_id])).status_code == 405
    assert client.get(reverse("support-upload", args=[batch.product_id])).status_code == 405


def test_product_list_creates_and_lists_products(client, owner, team):
    client.force_login(owner)
    response = client.post(reverse("product-list"), {"name": "Bottle"})
    assert response.status_code == 302
    assert "Bottle" in client.get(reverse("product-list")).content.decode()
    assert client.post(reverse("product-list"), {"name": "Bottle"}).status_code == 400


def test_htmx_batch_poll_renders_the_partial_and_stops_when_done(client, owner, batch):
    client.force_login(owner)
    response = client.get(reverse("batch-detail", args=[batch.pk]), headers={"HX-Request": "true"})
    assert response.status_code == 286  # finished: htmx stops polling
    body = response.content.decode()
    assert 'id="batch-live"' in body and "<html" not in body
    full = client.get(reverse("batch-detail", args=[batch.pk]))
    assert "<html" in full.content.decode()


def test_batch_upload_through_the_form_lists_refused_files(client, owner, batch):
    client.force_login(owner)
    from django.core.files.uploadedfile import SimpleUploadedFile

    files = [SimpleUploadedFile("ok.png", png_bytes(5)), SimpleUploadedFile("broken.png", b"nope")]
    response = client.post(reverse("batch-upload", args=[batch.product_id]), {"images": files, "lot": "A1"})
    assert response.status_code == 302
    page = client.get(response.url).content.decode()
    assert "broken.png" in page and "not an image" in page


def test_batch_filter_by_verdict(client, owner, batch):
    client.force_login(owner)
    verdict = batch.inspections.get().verdict
    other = "good" if verdict != "good" else "defective"
    assert "q.png" in client.get(reverse("batch-detail", args=[batch.pk]), {"verdict": verdict}).content.decode()
    assert "q.png" not in client.get(reverse("batch-detail", args=[batch.pk]), {"verdict": other}).content.decode()


def test_support_status_poll_reloads_the_page_when_fitting_ends(client, owner, batch):
    client.force_login(owner)
    response = client.get(reverse("product-detail", args=[batch.product_id]), headers={"HX-Request": "true"})
    assert response.status_code == 286 and response["HX-Refresh"] == "true"
    assert 'id="support-status"' in response.content.decode()


def test_batch_grid_is_paged(client, owner, batch, monkeypatch):
    from inspector.inspections import views

    monkeypatch.setattr(views, "PAGE_SIZE", 1)
    client.force_login(owner)
    inspection_services.batch_create(
        product=batch.product, user=owner, files=[upload("p1.png", png_bytes(6)), upload("p2.png", png_bytes(7))]
    )
    newest = batch.product.batches.order_by("-id").first()
    first = client.get(reverse("batch-detail", args=[newest.pk])).content.decode()
    second = client.get(reverse("batch-detail", args=[newest.pk]), {"page": 2}).content.decode()
    assert "p1.png" in first and "p2.png" not in first
    assert "p2.png" in second and "images 2–2 of 2" in second


def test_tiff_originals_are_served_as_png_for_the_browser(client, owner, batch, django_capture_on_commit_callbacks):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(8))).save(buf, format="TIFF")
    with django_capture_on_commit_callbacks(execute=True):
        tiff_batch = inspection_services.batch_create(
            product=batch.product, user=owner, files=[upload("scan.tif", buf.getvalue())]
        )
    inspection = tiff_batch.inspections.get()
    assert inspection.image.name.endswith(".tif")
    client.force_login(owner)
    response = client.get(reverse("media", args=[inspection.image.name]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"


def test_product_page_shows_the_active_detector_and_the_progress_of_a_training_fit(client, owner, batch):
    from inspector.products.models import SupportSet

    product = batch.product
    SupportSet.objects.create(
        product=product,
        version=9,
        method="dfd",
        status="fitting",
        progress=0.42,
        progress_message="training step 63/150",
    )
    client.force_login(owner)
    response = client.get(reverse("product-detail", args=[product.pk]), headers={"HX-Request": "true"})
    page = response.content.decode()
    assert response.status_code == 200  # still polling
    assert 'value="42"' in page and "training step 63/150" in page
    full = client.get(reverse("product-detail", args=[product.pk])).content.decode()
    assert 'data-testid="detector-active"' in full and "fitted with <b>fastrecon</b>" in full
    assert '<option value="dfd"' in full


def test_uploading_a_file_again_says_so_and_lists_it_with_a_link_to_the_first(
    client, owner, team, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    product = ProductFactory(team=team)
    with django_capture_on_commit_callbacks(execute=True):
        product_services.support_set_create(product=product, user=owner, files=[upload("g.png", png_bytes(9))])
    client.force_login(owner)
    url = reverse("batch-upload", args=[product.pk])
    client.post(url, {"images": [SimpleUploadedFile("first.png", png_bytes(5))]})
    response = client.post(url, {"images": [SimpleUploadedFile("again.png", png_bytes(5))]}, follow=True)
    page = response.content.decode()
    assert "1 of 1 images were uploaded to this product before" in page
    first = product.batches.order_by("id").first().inspections.get()
    assert "Duplicates (1)" in page and reverse("inspection-detail", args=[first.pk]) in page
    again = product.batches.order_by("id").last().inspections.get()
    detail = client.get(reverse("inspection-detail", args=[again.pk])).content.decode()
    assert 'data-testid="duplicate-of"' in detail
    api = client.get(f"/api/batches/{again.batch_id}/").json()
    assert api["duplicates"] == 1 and api["inspections"][0]["duplicate_of"] == first.pk
