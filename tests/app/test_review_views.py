from __future__ import annotations

import pytest
from django.urls import reverse

from inspector.inspections import services as inspection_services
from inspector.inspections.models import Batch, Inspection
from inspector.products import services as product_services
from inspector.products.models import DefectType
from inspector.review import services as review_services
from inspector.review.defect_types import defect_type_create
from inspector.review.models import ReviewEvent

from .factories import ProductFactory, UserFactory, png_bytes, upload

HTMX = {"HX-Request": "true"}


def flagged_batch(*, user, product, n: int, capture, lot: str = "") -> Batch:
    """A ready support set and a processed batch of `n` images, all flagged for review.

    The small random-weight detector's verdicts are arbitrary, so the verdicts are then set through the ORM:
    the images, heatmaps and nearest support images are the real pipeline's. `capture(execute=True)` runs the
    on-commit work (pytest-django's django_capture_on_commit_callbacks; a no-op where commits are real)."""
    with capture(execute=True):
        product_services.support_set_create(
            product=product, user=user, files=[upload("g.png", png_bytes(1)), upload("h.png", png_bytes(2))]
        )
    with capture(execute=True):
        batch = inspection_services.batch_create(
            product=product,
            user=user,
            files=[upload(f"part{k:02d}.png", png_bytes(100 + k, defect=k % 2 == 0)) for k in range(n)],
            lot=lot,
        )
    assert batch.inspections.filter(status=Inspection.Status.DONE).count() == n
    batch.inspections.update(verdict=Inspection.Verdict.REVIEW)
    return batch


@pytest.fixture
def batch(owner, team, django_capture_on_commit_callbacks):
    product = ProductFactory(team=team)
    return flagged_batch(user=owner, product=product, n=4, capture=django_capture_on_commit_callbacks, lot="L-1")


@pytest.fixture
def product(batch):
    return batch.product


@pytest.fixture
def scratch(product):
    return defect_type_create(product=product, name="scratch")


@pytest.fixture
def colleague(team):
    user = UserFactory()
    team.members.add(user, through_defaults={"role": "admin"})
    return user


def items(batch) -> list[Inspection]:
    return list(batch.inspections.order_by("id"))


def url(name, product, **query):
    from urllib.parse import urlencode

    return reverse(name, args=[product.pk]) + (f"?{urlencode(query)}" if query else "")


def test_review_page_renders_the_first_queue_item_and_leases_it(client, owner, batch, product, scratch):
    client.force_login(owner)
    response = client.get(url("review", product))
    body = response.content.decode()
    first = items(batch)[0]
    assert response.status_code == 200 and "<html" in body
    assert f'data-item="{first.pk}"' in body and "part00.png" in body
    assert "1 of 4" in body and "scratch" in body and "Review queue" in body
    first.refresh_from_db()
    assert first.lease_by == owner and first.lease_until is not None


def test_htmx_get_renders_only_the_item_partial_and_varies_on_hx_request(client, owner, product):
    client.force_login(owner)
    response = client.get(url("review", product), headers=HTMX)
    assert "<html" not in response.content.decode() and 'class="review-item"' in response.content.decode()
    assert "HX-Request" in response["Vary"]


def test_a_second_reviewer_of_the_team_gets_a_different_item(client, owner, colleague, batch, product):
    client.force_login(owner)
    client.get(url("review", product))
    client.force_login(colleague)
    body = client.get(url("review", product)).content.decode()
    first, second = items(batch)[:2]
    assert f'data-item="{second.pk}"' in body
    second.refresh_from_db()
    first.refresh_from_db()
    assert second.lease_by == colleague and first.lease_by == owner


def test_asking_for_an_item_another_reviewer_holds_says_so(client, owner, colleague, batch, product):
    first = items(batch)[0]
    client.force_login(colleague)
    client.get(url("review", product))  # the colleague holds the first image
    client.force_login(owner)
    body = client.get(url("review", product, item=first.pk)).content.decode()
    assert "open with another reviewer" in body and colleague.username in body
    assert f'data-item="{first.pk}"' not in body
    third = items(batch)[2]
    body = client.get(url("review", product, item=third.pk)).content.decode()
    assert f'data-item="{third.pk}"' in body and "open with another reviewer" not in body
    third.refresh_from_db()
    assert third.lease_by == owner


def test_decide_records_the_decision_and_answers_with_the_next_item(client, owner, batch, product, scratch):
    client.force_login(owner)
    first, second = items(batch)[:2]
    client.get(url("review", product))
    response = client.post(
        url("review-decide", product),
        {
            "item": first.pk,
            "version": 0,
            "decision": "defective",
            "defect_type": scratch.pk,
            # the filters travel with every decision and must not be mistaken for it
            "verdict": "review",
            "reviewed": "no",
            "batch": batch.pk,
        },
        headers=HTMX,
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert f'data-item="{second.pk}"' in body and "<html" not in body and "1 of 3" in body
    first.refresh_from_db()
    assert (first.reviewed_verdict, first.confirmed_type, first.reviewed_by) == ("defective", scratch, owner)
    assert first.review_version == 1 and first.lease_by is None
    assert ReviewEvent.objects.filter(inspection=first, kind=ReviewEvent.Kind.REVIEW, new_type="scratch").exists()
    second.refresh_from_db()
    assert second.lease_by == owner


def test_deciding_good_needs_no_type(client, owner, batch, product):
    client.force_login(owner)
    first = items(batch)[0]
    response = client.post(
        url("review-decide", product), {"item": first.pk, "version": 0, "decision": "good"}, headers=HTMX
    )
    assert response.status_code == 200
    first.refresh_from_db()
    assert first.reviewed_verdict == "good" and first.confirmed_type is None
    second = items(batch)[1]
    plain = client.post(url("review-decide", product), {"item": second.pk, "version": 0, "decision": "good"})
    assert plain.status_code == 302 and plain.url.startswith(url("review", product))


def test_a_stale_decision_gets_409_with_the_message_and_overwrites_nothing(
    client, owner, colleague, batch, product, scratch
):
    first = items(batch)[0]
    review_services.review_decide(inspection_id=first.pk, user=colleague, verdict="good", expected_version=0)
    client.force_login(owner)
    response = client.post(
        url("review-decide", product),
        {"item": first.pk, "version": 0, "decision": "defective", "defect_type": scratch.pk},
        headers=HTMX,
    )
    assert response.status_code == 409
    assert f"part00.png was changed by {colleague.username}" in response.content.decode()
    first.refresh_from_db()
    assert first.reviewed_verdict == "good" and first.reviewed_by == colleague


def test_a_type_of_another_product_is_refused(client, owner, team, batch, product):
    client.force_login(owner)
    foreign = DefectType.objects.create(product=ProductFactory(team=team), name="dent")
    first = items(batch)[0]
    response = client.post(
        url("review-decide", product),
        {"item": first.pk, "version": 0, "decision": "defective", "defect_type": foreign.pk},
    )
    assert response.status_code == 400
    first.refresh_from_db()
    assert first.reviewed_verdict == ""


def test_undo_restores_the_item_and_shows_it_again_leased(client, owner, batch, product, scratch):
    client.force_login(owner)
    first, second = items(batch)[:2]
    client.post(
        url("review-decide", product),
        {"item": first.pk, "version": 0, "decision": "defective", "defect_type": scratch.pk},
        headers=HTMX,
    )
    response = client.post(url("review-undo", product), {"item": second.pk}, headers=HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert f'data-item="{first.pk}"' in body and "Undone" in body and "not reviewed yet" in body
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.reviewed_verdict == "" and first.confirmed_type is None and first.review_version == 2
    assert first.lease_by == owner and second.lease_by is None


def test_undo_with_nothing_to_undo_says_so(client, owner, product):
    client.force_login(owner)
    response = client.post(url("review-undo", product), headers=HTMX)
    assert response.status_code == 400 and "nothing to undo" in response.content.decode()


def test_next_and_previous_move_in_queue_order_and_release_the_item_left(client, owner, batch, product):
    client.force_login(owner)
    first, second = items(batch)[:2]
    client.get(url("review", product))
    body = client.post(url("review-move", product), {"item": first.pk, "direction": "next"}, headers=HTMX)
    assert f'data-item="{second.pk}"' in body.content.decode()
    first.refresh_from_db()
    assert first.lease_by is None
    body = client.post(url("review-move", product), {"item": second.pk, "direction": "prev"}, headers=HTMX)
    assert f'data-item="{first.pk}"' in body.content.decode()
    body = client.post(url("review-move", product), {"item": first.pk, "direction": "prev"}, headers=HTMX)
    assert f'data-item="{first.pk}"' in body.content.decode() and "first free image" in body.content.decode()


def test_a_new_type_is_created_and_selected_for_the_item(client, owner, batch, product, scratch):
    client.force_login(owner)
    first = items(batch)[0]
    response = client.post(url("review-type-create", product), {"name": "crack", "item": first.pk}, headers=HTMX)
    crack = product.defect_types.get(name="crack")
    assert response.status_code == 200 and crack.shortcut == "2"
    assert f'data-pending-type="{crack.pk}"' in response.content.decode()
    again = client.post(url("review-type-create", product), {"name": "crack", "item": first.pk}, headers=HTMX)
    assert again.status_code == 400 and "already has a defect type" in again.content.decode()


def test_train_now_without_confirmed_types_shows_the_reason(client, owner, product):
    client.force_login(owner)
    response = client.post(url("review-train", product), headers=HTMX)
    assert response.status_code == 200 and "no confirmed defect types yet" in response.content.decode()


def test_queue_empty_when_the_filters_match_nothing(client, owner, product):
    client.force_login(owner)
    body = client.get(url("review", product, lot="nope")).content.decode()
    assert 'data-testid="queue-empty"' in body


def test_grid_lists_the_filtered_queue_with_badges(client, owner, batch, product):
    client.force_login(owner)
    body = client.get(url("review-grid", product, batch=batch.pk)).content.decode()
    assert body.count('data-testid="grid-card"') == 4 and "part03.png" in body
    first = items(batch)[0]
    assert f'value="{first.pk}:0"' in body


def test_grid_bulk_assigns_a_type_to_selected_items_and_reports_stale_ones(
    client, owner, colleague, batch, product, scratch
):
    first, second, third, _ = items(batch)
    review_services.review_decide(inspection_id=second.pk, user=colleague, verdict="good", expected_version=0)
    client.force_login(owner)
    response = client.post(
        url("review-bulk", product),
        {"items": [f"{first.pk}:0", f"{second.pk}:0"], "action": "type", "defect_type": scratch.pk, "reviewed": "all"},
        follow=True,
    )
    body = response.content.decode()
    assert response.status_code == 200 and "1 of 2 images marked defective: scratch" in body
    assert f"part01.png was changed by {colleague.username}" in body
    first.refresh_from_db()
    second.refresh_from_db()
    third.refresh_from_db()
    assert first.confirmed_type == scratch and second.reviewed_verdict == "good" and third.reviewed_verdict == ""


def test_grid_bulk_can_apply_to_every_filtered_image_it_showed(client, owner, batch, product):
    client.force_login(owner)
    grid = client.get(url("review-grid", product), {"lot": "L-1"})
    shown = {k: grid.context[k] for k in ("all_count", "all_max_id")}
    assert shown["all_count"] == 4
    form = {"scope": "all", "action": "good", "lot": "L-1"}
    stale = client.post(url("review-bulk", product), form | shown | {"all_count": 3}, follow=True)
    assert "the filtered set changed" in stale.content.decode()
    assert set(batch.inspections.values_list("reviewed_verdict", flat=True)) == {""}  # nothing applied
    response = client.post(url("review-bulk", product), form | shown, follow=True)
    assert "4 of 4 images marked good" in response.content.decode()
    assert set(batch.inspections.values_list("reviewed_verdict", flat=True)) == {"good"}


def test_grid_bulk_without_a_type_or_selection_explains(client, owner, product):
    client.force_login(owner)
    assert (
        "choose an action" in client.post(url("review-bulk", product), {"action": "type"}, follow=True).content.decode()
    )
    assert (
        "no image selected"
        in client.post(url("review-bulk", product), {"action": "good"}, follow=True).content.decode()
    )


def _doors(product, first) -> list[tuple[str, str, dict]]:
    return [
        ("get", url("review", product), {}),
        ("get", url("review-grid", product), {}),
        ("post", url("review-decide", product), {"item": first.pk, "version": 0, "decision": "good"}),
        ("post", url("review-undo", product), {}),
        ("post", url("review-move", product), {"item": first.pk}),
        ("post", url("review-type-create", product), {"name": "x"}),
        ("post", url("review-train", product), {}),
        ("post", url("review-bulk", product), {"items": [f"{first.pk}:0"], "action": "good"}),
    ]


def test_another_teams_user_gets_404_everywhere_and_changes_nothing(client, other, batch, product):
    client.force_login(other)
    first = items(batch)[0]
    for method, address, data in _doors(product, first):
        assert getattr(client, method)(address, data).status_code == 404, address
    first.refresh_from_db()
    assert first.reviewed_verdict == "" and first.lease_by is None and not product.defect_types.exists()


def test_anonymous_is_sent_to_login(client, batch, product):
    for method, address, data in _doors(product, items(batch)[0]):
        response = getattr(client, method)(address, data)
        assert response.status_code == 302 and response.url.startswith(reverse("login")), address


def test_bad_ids_are_404(client, owner, batch, product):
    client.force_login(owner)
    assert client.get("/products/999999/review/").status_code == 404
    assert client.get(url("review", product, item=999999)).status_code == 404
    assert client.post(url("review-decide", product), {"item": 999999, "decision": "good"}).status_code == 404


def test_an_image_of_another_product_of_the_team_is_404(client, owner, team, batch, product):
    client.force_login(owner)
    sibling = ProductFactory(team=team)
    assert client.get(url("review", sibling, item=items(batch)[0].pk)).status_code == 404


def test_wrong_methods_are_405(client, owner, product):
    client.force_login(owner)
    for name in ("review-decide", "review-undo", "review-move", "review-type-create", "review-train", "review-bulk"):
        assert client.get(url(name, product)).status_code == 405, name
    for name in ("review", "review-grid"):
        assert client.post(url(name, product)).status_code == 405, name
