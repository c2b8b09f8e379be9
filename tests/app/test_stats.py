from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from inspector.inspections.models import Batch, Inspection
from inspector.products.models import DefectType, SupportSet
from inspector.review.models import ClassifierVersion, ReviewEvent
from inspector.review.services import review_decide, review_undo
from inspector.stats import charts
from inspector.stats.exports import IMAGE_COLUMNS, SUMMARY_COLUMNS
from inspector.stats.figures import RULES, product_stats
from inspector.stats.filters import StatsFilters, filters_from_query, today
from inspector.stats.rows import ProductStats

from .factories import ProductFactory, UserFactory

UTC = ZoneInfo("UTC")
SVG = "{http://www.w3.org/2000/svg}"


# ------------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def product(team):
    return ProductFactory(team=team, name="Valve body")


@pytest.fixture
def support(product):
    return SupportSet.objects.create(product=product, version=1, method="patchcore", status=SupportSet.Status.READY)


def make_batch(product, support, when: datetime, lot: str = "", line: str = "") -> Batch:
    batch = Batch.objects.create(product=product, support_set=support, lot=lot, line=line)
    Batch.objects.filter(pk=batch.pk).update(created_at=when)
    batch.refresh_from_db()
    return batch


def make_image(batch: Batch, name: str, verdict: str, **fields) -> Inspection:
    return Inspection.objects.create(
        batch=batch,
        support_set=batch.support_set,
        image=f"inspections/{name}",
        original_name=name,
        checksum=name,
        width=64,
        height=64,
        status=fields.pop("status", Inspection.Status.DONE),
        verdict=verdict,
        score=fields.pop("score", 0.5),
        **fields,
    )


def types_of(data: ProductStats) -> dict[str, int]:
    return {t.name: t.count for t in data.types}


def all_dates() -> StatsFilters:
    return StatsFilters(date_from=date(2025, 1, 1), date_to=date(2025, 12, 31))


@pytest.fixture
def scene(product, support, owner):
    """Two batches on two days of one week and one the week after, with every case of the type rule."""
    scratch = DefectType.objects.create(product=product, name="scratch", colour="#d62728")
    dent = DefectType.objects.create(product=product, name="dent", colour="#1f77b4")
    v1 = ClassifierVersion.objects.create(
        product=product, version=1, status="ready", decision="promoted", metrics={"loo_accuracy": 80.0, "loo_n": 10}
    )
    v2 = ClassifierVersion.objects.create(
        product=product, version=2, status="ready", decision="promoted", is_active=True, metrics={"loo_accuracy": 90.0}
    )
    b1 = make_batch(product, support, datetime(2025, 3, 3, 9, tzinfo=UTC), lot="L1", line="A")  # Monday
    b2 = make_batch(product, support, datetime(2025, 3, 4, 9, tzinfo=UTC), lot="L2", line="B")
    b3 = make_batch(product, support, datetime(2025, 3, 11, 9, tzinfo=UTC), lot="L1", line="A")
    images = {
        # predicted scratch, not reviewed, flagged: a scratch
        "p_scratch": make_image(b1, "p_scratch.png", "defective", predicted_type=scratch, classifier_version=v1),
        # predicted but unknown: unknown type
        "p_unknown": make_image(
            b1, "p_unknown.png", "review", predicted_type=scratch, predicted_unknown=True, classifier_version=v1
        ),
        # no prediction at all: unknown type
        "p_none": make_image(b1, "p_none.png", "review"),
        # machine good, not reviewed: not a defect
        "good": make_image(b1, "good.png", "good"),
        # predicted scratch by v1, reviewer confirms dent: a dent (confirmed beats predicted), a type override
        "c_dent": make_image(b2, "c_dent.png", "defective", predicted_type=scratch, classifier_version=v1),
        # predicted dent by v2, reviewer confirms dent: agreement
        "c_dent2": make_image(b2, "c_dent2.png", "defective", predicted_type=dent, classifier_version=v2),
        # flagged, reviewer says good: not a defect, a verdict override
        "false_alarm": make_image(b2, "false_alarm.png", "review", predicted_type=dent, classifier_version=v2),
        # next week: machine good, reviewer says defective scratch (no prediction): verdict override
        "missed": make_image(b3, "missed.png", "good"),
        # failed image: out of every figure
        "failed": make_image(b3, "failed.png", "", status=Inspection.Status.FAILED, score=None),
    }
    review_decide(
        inspection_id=images["c_dent"].pk, user=owner, verdict="defective", defect_type=dent, expected_version=None
    )
    review_decide(
        inspection_id=images["c_dent2"].pk, user=owner, verdict="defective", defect_type=dent, expected_version=None
    )
    review_decide(inspection_id=images["false_alarm"].pk, user=owner, verdict="good", expected_version=None)
    review_decide(
        inspection_id=images["missed"].pk, user=owner, verdict="defective", defect_type=scratch, expected_version=None
    )
    return {
        "product": product,
        "scratch": scratch,
        "dent": dent,
        "v1": v1,
        "v2": v2,
        "b1": b1,
        "b2": b2,
        "b3": b3,
        **images,
    }


# ------------------------------------------------------------------------------------------------ the rules


def test_counts_per_type_follow_the_type_rule(scene):
    data = product_stats(product=scene["product"], filters=all_dates())
    assert data.inspected == 8  # the failed image is out
    assert data.defects == 6  # good and the false alarm are not defects
    assert types_of(data) == {"unknown type": 2, "dent": 2, "scratch": 2}
    dent = next(t for t in data.types if t.name == "dent")
    assert (dent.reviewed, dent.confirmed, dent.share_pct, dent.rate_pct) == (2, 2, pytest.approx(33.33), 25.0)
    assert data.review_mix == {"unreviewed": 4, "good": 1, "defective": 3}
    assert data.machine_mix == {"good": 2, "review": 3, "defective": 3}
    assert data.crosstab["review"] == {"unreviewed": 2, "good": 1, "defective": 0}


def test_counts_per_day_and_per_week_bucket(scene):
    f = StatsFilters(date_from=date(2025, 3, 3), date_to=date(2025, 3, 11), bucket="day")
    days = {b.start: b for b in product_stats(product=scene["product"], filters=f).buckets}
    assert len(days) == 9  # every day of the range, empty ones included
    assert days[date(2025, 3, 3)].by_type == {"unknown type": 2, "dent": 0, "scratch": 1}
    assert (days[date(2025, 3, 3)].inspected, days[date(2025, 3, 3)].defects) == (4, 3)
    assert days[date(2025, 3, 3)].by_type_rate_pct["scratch"] == 25.0
    assert days[date(2025, 3, 4)].by_type == {"unknown type": 0, "dent": 2, "scratch": 0}
    assert days[date(2025, 3, 5)].inspected == 0 and days[date(2025, 3, 5)].defect_rate_pct is None
    assert days[date(2025, 3, 11)].by_type["scratch"] == 1

    weeks = product_stats(
        product=scene["product"],
        filters=StatsFilters(date_from=date(2025, 3, 5), date_to=date(2025, 3, 16), bucket="week"),
    ).buckets
    assert [b.start for b in weeks] == [date(2025, 3, 3), date(2025, 3, 10)]  # Mondays
    # 3-5 to 3-16 leaves out the batches of 3-3 and 3-4: the first week is empty
    assert [(b.inspected, b.defects) for b in weeks] == [(0, 0), (1, 1)]  # the failed image is out


def test_reviewed_defective_without_a_type_keeps_the_prediction(scene, owner):
    review_decide(inspection_id=scene["p_scratch"].pk, user=owner, verdict="defective", expected_version=None)
    data = product_stats(product=scene["product"], filters=all_dates())
    scratch = next(t for t in data.types if t.name == "scratch")
    assert (scratch.count, scratch.reviewed, scratch.confirmed) == (2, 2, 1)


def test_override_rate_uses_the_decision_in_force(scene, owner):
    data = product_stats(product=scene["product"], filters=all_dates())
    o = data.override
    # c_dent: type override; c_dent2: agreement; false_alarm and missed: verdict overrides
    assert (o.reviewed, o.decisions, o.verdict_overrides, o.type_overrides, o.overrides) == (4, 4, 2, 1, 3)
    assert o.rate_pct == 75.0

    # A reviewer changes c_dent to scratch (what the machine said), then takes it back: the dent decision is in
    # force again, so the figures come back too.
    review_decide(
        inspection_id=scene["c_dent"].pk,
        user=owner,
        verdict="defective",
        defect_type=scene["scratch"],
        expected_version=None,
    )
    assert product_stats(product=scene["product"], filters=all_dates()).override.overrides == 2
    review_undo(user=owner, product=scene["product"])
    assert product_stats(product=scene["product"], filters=all_dates()).override.overrides == 3


def test_reviewed_images_without_a_review_event_are_counted_apart(scene, owner):
    make_image(scene["b1"], "legacy.png", "review", reviewed_verdict="good", reviewed_by=owner)
    o = product_stats(product=scene["product"], filters=all_dates()).override
    assert (o.reviewed, o.decisions, o.without_event, o.overrides) == (5, 4, 1, 3)


def test_classifier_accuracy_per_version_on_confirmed_labels(scene, owner):
    # One more v2 image confirmed as its prediction, and one v2 image that the machine called unknown.
    extra = make_image(scene["b2"], "x.png", "defective", predicted_type=scene["dent"], classifier_version=scene["v2"])
    unk = make_image(
        scene["b2"],
        "u.png",
        "defective",
        predicted_type=scene["dent"],
        predicted_unknown=True,
        classifier_version=scene["v2"],
    )
    for image in (extra, unk):
        review_decide(
            inspection_id=image.pk, user=owner, verdict="defective", defect_type=scene["dent"], expected_version=None
        )
    versions = {v.version: v for v in product_stats(product=scene["product"], filters=all_dates()).versions}
    assert (versions[1].n, versions[1].correct, versions[1].accuracy_pct) == (1, 0, 0.0)  # c_dent
    # c_dent2 and x right; u ranked dent first too but was sent to a human as unknown: right (closed-set), and
    # counted as unknown; the override rate counts it as overridden.
    assert (versions[2].n, versions[2].correct, versions[2].unknown) == (3, 3, 1)
    assert versions[2].accuracy_pct == pytest.approx(100.0)
    assert (versions[1].loo_accuracy, versions[1].loo_n, versions[2].loo_accuracy) == (80.0, 10, 90.0)
    # "missed" had no classifier: it counts for no version
    assert ReviewEvent.objects.get(inspection=scene["missed"], kind="review").machine_version is None


def test_a_later_rename_does_not_change_the_accuracy(scene):
    DefectType.objects.filter(pk=scene["dent"].pk).update(name="dent (deep)")
    versions = {v.version: v for v in product_stats(product=scene["product"], filters=all_dates()).versions}
    assert (versions[2].n, versions[2].correct) == (1, 1)


def test_dates_are_inclusive_days_in_the_server_time_zone(settings, product, support):
    settings.TIME_ZONE = "Europe/Berlin"
    late = make_batch(product, support, datetime(2025, 3, 1, 23, 30, tzinfo=UTC))  # 00:30 on 2 March in Berlin
    make_image(late, "a.png", "defective")
    on = make_batch(product, support, datetime(2025, 3, 2, 22, 59, tzinfo=UTC))  # 23:59 on 2 March in Berlin
    make_image(on, "b.png", "defective")

    def count(first: str, last: str) -> int:
        filters = filters_from_query({"from": first, "to": last})
        return product_stats(product=product, filters=filters).inspected

    assert count("2025-03-02", "2025-03-02") == 2
    assert count("2025-03-01", "2025-03-01") == 0
    assert count("2025-03-03", "2025-03-03") == 0
    days = product_stats(product=product, filters=filters_from_query({"from": "2025-03-02"})).buckets
    assert days[0].start == date(2025, 3, 2) and days[0].inspected == 2


@pytest.mark.parametrize(
    "query, key",
    [
        ({"from": "2025-02-30"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "20250301"}, "from"),
        ({"from": "2025-03-05", "to": "2025-03-01"}, "from"),
        ({"bucket": "month"}, "bucket"),
        ({"batch": "x"}, "batch"),
        ({"from": "2020-01-01", "to": "2025-01-01"}, "to"),
    ],
)
def test_bad_filters_are_refused_with_a_message(query, key):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as info:
        filters_from_query(query)
    assert key in info.value.message_dict


def test_default_range_is_the_last_30_days_or_the_whole_batch():
    f = filters_from_query({})
    assert (f.date_to - f.date_from).days == 29 and f.date_to == today()
    assert filters_from_query({"batch": "7"}) == StatsFilters(batch_id=7)


# ------------------------------------------------------------------------------------------------- the page


def test_dashboard_shows_the_figures_and_the_rules(client, owner, scene):
    client.force_login(owner)
    url = reverse("product-stats", args=[scene["product"].pk])
    r = client.get(url, {"from": "2025-03-01", "to": "2025-03-31", "bucket": "week"})
    assert r.status_code == 200 and "HX-Request" in r["Vary"]
    body = r.content.decode()
    assert "<svg" in body and "Pareto of defect types" in body and RULES["defect"] in body
    assert reverse("api-product-export", args=[scene["product"].pk]) in body
    assert r.context["stats"].defects == 6 and r.context["stats"].override.overrides == 3
    partial = client.get(url, {"from": "2025-03-01", "to": "2025-03-31"}, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200 and "<html" not in partial.content.decode()


def test_dashboard_says_what_is_wrong_with_a_bad_date(client, owner, scene):
    client.force_login(owner)
    r = client.get(reverse("product-stats", args=[scene["product"].pk]), {"from": "2025-13-01"})
    assert r.status_code == 200
    assert "is not a date: use YYYY-MM-DD" in r.content.decode() and "stats" not in r.context


def test_dashboard_other_team_anonymous_bad_id_wrong_method(client, owner, other, scene):
    url = reverse("product-stats", args=[scene["product"].pk])
    assert client.get(url).status_code == 302  # to the login page
    client.force_login(other)
    assert client.get(url).status_code == 404
    client.force_login(owner)
    assert client.get(reverse("product-stats", args=[999999])).status_code == 404
    assert client.post(url).status_code == 405


def test_product_page_links_to_statistics(client, owner, product):
    client.force_login(owner)
    body = client.get(reverse("product-detail", args=[product.pk])).content.decode()
    assert reverse("product-stats", args=[product.pk]) in body


# -------------------------------------------------------------------------------------------------- the API


def test_summary_json_equals_the_dashboard(api, client, owner, scene):
    query = {"from": "2025-03-01", "to": "2025-03-31", "bucket": "week"}
    pid = scene["product"].pk
    r = api.get(f"/api/products/{pid}/stats/", query)
    assert r.status_code == 200 and r["Content-Type"].startswith("application/json")
    data = r.json()
    client.force_login(owner)
    shown = client.get(reverse("product-stats", args=[pid]), query).context
    assert data["types"] == shown["summary"]
    assert data["types"] == [
        {
            "type": "dent",
            "count": 2,
            "share_pct": 33.33,
            "rate_pct": 25.0,
            "reviewed": 2,
            "confirmed": 2,
            "classifier_n": 2,
            "classifier_correct": 1,
            "classifier_accuracy_pct": 50.0,
        },
        {
            "type": "scratch",
            "count": 2,
            "share_pct": 33.33,
            "rate_pct": 25.0,
            "reviewed": 1,
            "confirmed": 1,
            "classifier_n": 0,
            "classifier_correct": 0,
            "classifier_accuracy_pct": None,
        },
        {
            "type": "unknown type",
            "count": 2,
            "share_pct": 33.33,
            "rate_pct": 25.0,
            "reviewed": 0,
            "confirmed": 0,
            "classifier_n": 0,
            "classifier_correct": 0,
            "classifier_accuracy_pct": None,
        },
    ]
    s = shown["stats"]
    assert data["totals"] == {
        "inspected": s.inspected,
        "defects": s.defects,
        "defect_rate_pct": s.defect_rate_pct,
        "reviewed": s.reviewed,
    }
    assert data["override"]["rate_pct"] == s.override.rate_pct == 75.0
    assert [b["defects"] for b in data["series"]] == [b.defects for b in s.buckets]
    assert data["verdict_mix"]["machine"] == s.machine_mix
    assert [(v["version"], v["n"], v["correct"], v["loo_accuracy"]) for v in data["classifier_versions"]] == [
        (1, 1, 0, 80.0),
        (2, 1, 1, 90.0),
    ]


def test_format_csv_returns_the_summary_as_csv(api, scene):
    pid = scene["product"].pk
    r = api.get(f"/api/products/{pid}/stats/", {"format": "csv", "from": "2025-03-01", "to": "2025-03-31"})
    assert r.status_code == 200, r.content
    assert r["Content-Type"].startswith("text/csv")
    assert r["Content-Disposition"] == 'attachment; filename="valve-body-defect-types-2025-03-01_2025-03-31.csv"'
    rows = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert tuple(rows[0]) == SUMMARY_COLUMNS
    json_rows = api.get(f"/api/products/{pid}/stats/", {"from": "2025-03-01", "to": "2025-03-31"}).json()["types"]
    assert [(row["type"], int(row["count"])) for row in rows] == [(row["type"], row["count"]) for row in json_rows]


def test_format_json_explicit_and_unknown_format(api, scene):
    pid = scene["product"].pk
    assert api.get(f"/api/products/{pid}/stats/", {"format": "json"})["Content-Type"] == "application/json"
    r = api.get(f"/api/products/{pid}/stats/", {"format": "xml"})
    assert r.status_code == 400 and "format must be json or csv" in r.json()["format"][0]


def test_invalid_date_is_a_400_with_a_message(api, scene):
    pid = scene["product"].pk
    for url in (f"/api/products/{pid}/stats/", f"/api/products/{pid}/export.csv"):
        r = api.get(url, {"from": "2025-02-30", "format": "csv"})
        assert r.status_code == 400 and r["Content-Type"] == "application/json"
        assert "is not a date: use YYYY-MM-DD" in r.json()["from"][0]
    r = api.get(f"/api/products/{pid}/stats/", {"batch": scene["b1"].pk + 1000})
    assert r.status_code == 400 and "not a batch of this product" in r.json()["batch"][0]


def test_batch_export_rows_and_columns_are_exact(api, scene, settings):
    settings.TIME_ZONE = "UTC"
    r = api.get(reverse("api-batch-export", args=[scene["b2"].pk]))
    assert r.status_code == 200 and r.streaming
    assert r["Content-Type"] == "text/csv; charset=utf-8"
    assert r["Content-Disposition"] == f'attachment; filename="valve-body-batch-{scene["b2"].pk}-images.csv"'
    rows = list(csv.reader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert rows[0] == list(IMAGE_COLUMNS)
    c_dent = Inspection.objects.get(pk=scene["c_dent"].pk)
    review_time = c_dent.reviewed_at.astimezone(ZoneInfo("UTC")).isoformat(timespec="seconds")
    assert rows[1] == [
        "c_dent.png",
        str(scene["b2"].pk),
        "L2",
        "B",
        "2025-03-04T09:00:00+00:00",
        "0.5",
        "defective",
        "scratch",
        "",
        "dent",
        c_dent.reviewed_by.username,
        review_time,
    ]
    assert [row[0] for row in rows[1:]] == ["c_dent.png", "c_dent2.png", "false_alarm.png"]
    assert rows[3][7:10] == ["dent", "", ""]  # false alarm: reviewed good, no confirmed type


def test_product_export_uses_the_date_range_and_writes_unknown(api, scene):
    pid = scene["product"].pk
    r = api.get(f"/api/products/{pid}/export.csv", {"from": "2025-03-03", "to": "2025-03-03"})
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    assert 'filename="valve-body-images-2025-03-03_2025-03-03.csv"' in r["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert [row["file"] for row in rows] == ["p_scratch.png", "p_unknown.png", "p_none.png", "good.png"]
    assert [row["predicted_type"] for row in rows] == ["scratch", "unknown", "", ""]
    everything = api.get(f"/api/products/{pid}/export.csv", {"from": "2025-03-01", "to": "2025-03-31"})
    n_rows = len(list(csv.reader(io.StringIO(b"".join(everything.streaming_content).decode())))) - 1
    assert (
        n_rows
        == api.get(f"/api/products/{pid}/stats/", {"from": "2025-03-01", "to": "2025-03-31"}).json()["totals"][
            "inspected"
        ]
    )


def test_formula_injection_is_neutralised(api, product, support):
    batch = make_batch(product, support, datetime(2025, 3, 3, 9, tzinfo=UTC), lot='=HYPERLINK("x")', line="+1")
    evil = DefectType.objects.create(product=product, name="@SUM(A1)")
    make_image(batch, "-cmd.png", "defective", predicted_type=evil)
    rows = list(
        csv.reader(
            io.StringIO(b"".join(api.get(reverse("api-batch-export", args=[batch.pk])).streaming_content).decode())
        )
    )
    assert rows[1][0] == "'-cmd.png" and rows[1][2] == '\'=HYPERLINK("x")' and rows[1][3] == "'+1"
    assert rows[1][7] == "'@SUM(A1)"
    summary = api.get(
        f"/api/products/{product.pk}/stats/", {"format": "csv", "from": "2025-03-01", "to": "2025-03-31"}
    ).content.decode()
    assert list(csv.reader(io.StringIO(summary)))[1][0] == "'@SUM(A1)"


def test_other_team_anonymous_bad_id_and_wrong_method(api, other, scene):
    pid, bid = scene["product"].pk, scene["b1"].pk
    urls = [
        f"/api/products/{pid}/stats/",
        f"/api/products/{pid}/stats/?format=csv",
        f"/api/products/{pid}/export.csv",
        f"/api/batches/{bid}/export.csv",
    ]
    stranger = APIClient()
    stranger.force_authenticate(other)
    for url in urls:
        r = stranger.get(url)
        assert r.status_code == 404 and r["Content-Type"] == "application/json", url
        assert APIClient().get(url).status_code in (401, 403), url
        assert api.post(url).status_code == 405, url
    assert api.get("/api/products/999999/stats/").status_code == 404
    assert api.get("/api/products/999999/export.csv").status_code == 404
    assert api.get("/api/batches/999999/export.csv").status_code == 404


def test_token_auth_and_session_auth_reach_the_exports(client, owner, scene):
    from inspector.accounts.services import token_create

    token, key = token_create(user=UserFactory(), name="exporter")
    scene["product"].team.members.add(token.user, through_defaults={"role": "admin"})
    by_token = APIClient()
    by_token.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert by_token.get(reverse("api-batch-export", args=[scene["b1"].pk])).status_code == 200
    client.force_login(owner)  # the dashboard's links: a browser session
    assert client.get(f"/api/products/{scene['product'].pk}/stats/?format=csv").status_code == 200


# ----------------------------------------------------------------------------------------------- the charts


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg" and root.get("role") == "img"
    assert root.find(SVG + "title").text and root.find(SVG + "desc").text
    return root


def test_charts_parse_as_xml_and_escape_labels():
    evil = '<script>alert("x")</script> & co'
    bars = charts.stacked_bars(
        chart_id="t",
        title="Defects <per> day",
        desc="a & b",
        categories=["2025-03-03", evil],
        series=[charts.Series(evil, '"><script>', [1, 2]), charts.Series("dent", "#1f77b4", [0, 3])],
    )
    pareto = charts.pareto(chart_id="p", title="Pareto", desc="d", items=[(evil, 5, "#123"), ("dent", 3, "#1f77b4")])
    mix = charts.proportion_bars(
        chart_id="m", title="Mix", desc="d", rows=[("Machine", [("good", 3, "#1d7a3a"), (evil, 1, "#b3261e")])]
    )
    for svg in (bars, pareto, mix):
        assert "<script>" not in svg and "&lt;script&gt;" in svg
        texts = [t.text for t in _parse(svg).iter(SVG + "text")]
        assert any(evil[:20] in (t or "") for t in texts)
    root = _parse(bars)
    assert root.find(SVG + "title").text == "Defects <per> day"
    assert {r.get("fill") for r in root.iter(SVG + "rect")} >= {charts.GREY, "#1f77b4"}  # bad colour: grey
    assert "5" in [t.text for t in _parse(bars).iter(SVG + "text")]  # the total of the second bar
    assert "100 %" in [t.text for t in _parse(pareto).iter(SVG + "text")]  # the cumulative line ends at 100 %


def test_charts_without_data_say_so():
    svg = charts.pareto(chart_id="e", title="Pareto", desc="none", items=[])
    assert "No data" in svg and _parse(svg) is not None


def test_dashboard_charts_escape_type_names(client, owner, product, support):
    batch = make_batch(product, support, datetime(2025, 3, 3, 9, tzinfo=UTC))
    # A colour that would break out of an attribute (7 characters: the column's width on PostgreSQL).
    evil = DefectType.objects.create(product=product, name="<b>bold</b>", colour='"><svg>')
    make_image(batch, "a.png", "defective", predicted_type=evil)
    client.force_login(owner)
    body = client.get(reverse("product-stats", args=[product.pk]), {"from": "2025-03-01", "to": "2025-03-09"})
    html = body.content.decode()
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html and '"><svg>' not in html


def test_a_type_chosen_before_any_classifier_spoke_is_not_an_override(product, support, owner):
    batch = make_batch(product, support, datetime(2025, 3, 3, 9, tzinfo=UTC))
    crack = DefectType.objects.create(product=product, name="crack")
    first = make_image(batch, "first.png", "defective")  # flagged, no classifier yet
    review_decide(inspection_id=first.pk, user=owner, verdict="defective", defect_type=crack, expected_version=0)
    o = product_stats(product=product, filters=all_dates()).override
    assert (o.decisions, o.overrides, o.rate_pct) == (1, 0, 0.0)
