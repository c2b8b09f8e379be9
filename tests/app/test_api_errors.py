"""The three 500s the schema fuzzer found (issue 20), and JSON errors for everything under /api/."""

from __future__ import annotations

HUGE = "168879006213617976105685221376"


def test_options_on_the_csv_stats_is_not_a_server_error(api, product):
    response = api.options(f"/api/products/{product.pk}/stats/?format=csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response.content.decode().splitlines()[0] == "detail"


def test_a_unicode_digit_in_a_query_is_a_400_not_a_500(api, product):
    for value in ["%C2%B2", "%E2%91%A0"]:
        response = api.get(f"/api/products/{product.pk}/stats/?batch={value}")
        assert response.status_code == 400, value
        assert "batch" in response.json()["detail"]


def test_an_id_beyond_the_database_range_is_a_json_404(api, team):
    for method in (api.delete, api.patch):
        response = method(f"/api/teams/{team.pk}/members/{HUGE}/")
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}


def test_an_unmatched_api_path_answers_json(api):
    for path in ["/api/nothing-here/", "/api/products/abc/", f"/api/products/{HUGE}/"]:
        response = api.get(path)
        assert response.status_code == 404, path
        assert response["Content-Type"] == "application/json"
        assert response.json()["detail"] == "Not found."


def test_an_unmatched_page_is_the_styled_404(client, owner):
    client.force_login(owner)
    response = client.get("/products/abc/")
    assert response.status_code == 404
    assert b"Not found" in response.content and b"Back to your products" in response.content
