"""Teams and roles: every URL of the project against every persona (operator, reviewer, lead, admin of the team,
an admin of another team, anonymous), membership management, and product creation by role."""

from __future__ import annotations

import json

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from inspector.accounts.services import token_create
from inspector.audit.models import Action, AuditEvent
from inspector.inspections.models import Batch, Inspection
from inspector.products import services as product_services
from inspector.products.models import Membership, Product, Role, SupportImage, SupportSet
from inspector.review.models import ClassifierVersion

from .factories import ProductFactory, TeamFactory, UserFactory, png_bytes

ANON, OTHER = "anonymous", "other team"
PERSONAS = [ANON, OTHER, Role.OPERATOR, Role.REVIEWER, Role.LEAD, Role.ADMIN]  # least to most: side effects last
PUBLIC = "public"  # answers everybody the same (login page, API schema, health check)
SELF = "own account"  # any signed-in user, on their own objects (API tokens); another user's object is 404
STAFF = "staff"  # Django staff or the metrics bearer token, whatever the team role
OP, RE, LE, AD = Role.OPERATOR, Role.REVIEWER, Role.LEAD, Role.ADMIN

# url name -> {method: minimum role, or PUBLIC}. A URL added to urls.py without a line here fails the test below.
# Objects of the team (product, batch, inspection, file, team) answer 404 to a member of another team.
MATRIX: dict[str, dict[str, str]] = {
    "login": {"get": PUBLIC},
    "logout": {"post": PUBLIC},
    "api-schema": {"get": PUBLIC},
    # products: anyone in the team sees them; creating one needs a lead (an admin elsewhere creates in their team)
    "product-list": {"get": OP, "post": LE},
    "api-product-list": {"get": OP, "post": LE},
    "product-detail": {"get": OP},
    "api-product-detail": {"get": OP},
    "support-upload": {"post": LE},
    "api-support-images": {"post": LE},
    "product-detector": {"post": LE},
    "api-product-detector": {"post": LE},
    # batches and images: operators upload and view
    "batch-upload": {"post": OP},
    "api-batch-list": {"post": OP},
    "batch-detail": {"get": OP},
    "api-batch-detail": {"get": OP},
    "inspection-detail": {"get": OP},
    "api-inspection": {"get": OP},
    "media": {"get": OP},
    # review: reviewers decide; creating a type or training from the review screen is a lead's
    "review": {"get": RE},
    "review-decide": {"post": RE},
    "review-undo": {"post": RE},
    "review-move": {"post": RE},
    "review-grid": {"get": RE},
    "review-bulk": {"post": RE},
    "review-type-create": {"post": LE},
    "review-train": {"post": LE},
    "api-review": {"post": RE},
    # defect types and classifier: everyone sees, leads change
    "defect-types": {"get": OP, "post": LE},
    "api-defect-types": {"get": OP, "post": LE},
    "classifier": {"get": OP, "post": LE},
    "api-classifier": {"get": OP},
    "api-classifier-train": {"post": LE},
    "api-classifier-promote": {"post": LE},
    "api-classifier-rollback": {"post": LE},
    "false-alarms-to-support": {"post": LE},
    # statistics and exports: reviewers and up
    "product-stats": {"get": RE},
    "api-product-stats": {"get": RE},
    "api-product-export": {"get": RE},
    "api-batch-export": {"get": RE},
    # teams: members see the members, admins change them; the audit log is for leads and admins
    "team-list": {"get": OP},
    "api-team-list": {"get": OP},
    "team-members": {"get": OP, "post": AD},
    "api-team-members": {"get": OP, "post": AD},
    "api-team-member": {"patch": AD, "delete": AD},
    "team-audit": {"get": LE},
    "team-audit-csv": {"get": LE},
    "api-team-audit": {"get": LE},
    # API tokens belong to a user, not to a team (the token in the URL is the team admin's own)
    "account-tokens": {"get": SELF, "post": SELF},
    "account-token-revoke": {"post": SELF},
    "api-token-list": {"get": SELF, "post": SELF},
    "api-token-detail": {"get": SELF, "delete": SELF},
    # operations: the health check answers load balancers; metrics are for staff or the metrics token
    "healthz": {"get": PUBLIC},
    "metrics": {"get": STAFF},
}
OBJECTLESS = {"product-list", "api-product-list", "team-list", "api-team-list", "account-tokens", "api-token-list"}
MULTIPART_APIS = {"api-support-images", "api-batch-list"}


def _url_names(patterns, namespace: str = "") -> set[str]:
    names = set()
    for p in patterns:
        if isinstance(p, URLResolver):
            if p.namespace == "admin":
                continue  # Django's admin: its own staff check (asserted in test_admin_needs_staff below)
            names |= _url_names(p.url_patterns, p.namespace or namespace)
        elif isinstance(p, URLPattern):
            assert p.name, f"unnamed URL {p.pattern}: name it and add it to MATRIX"
            names.add(f"{namespace}:{p.name}" if namespace else p.name)
    return names


def test_every_url_of_the_project_has_a_line_in_the_role_matrix():
    names = _url_names(get_resolver().url_patterns)
    assert names - MATRIX.keys() == set(), "new URLs: say which role they need in MATRIX"
    assert MATRIX.keys() - names == set(), "MATRIX names URLs that no longer exist"


@pytest.fixture
def scene(db, settings):
    users = {role: UserFactory(username=f"u-{role}") for role in Role.values}
    team = TeamFactory(members=dict(zip(users.values(), Role.values, strict=True)))
    target = UserFactory(username="u-target")
    team.members.add(target, through_defaults={"role": Role.OPERATOR})
    users[OTHER] = UserFactory(username="u-other")
    TeamFactory(members=[users[OTHER]])
    product = ProductFactory(team=team)
    support_set = SupportSet.objects.create(product=product, version=1, method="fastrecon", status="ready")
    support_name = default_storage.save("support/s.png", ContentFile(png_bytes(1)))
    SupportImage.objects.create(support_set=support_set, position=0, image=support_name, original_name="s.png")
    batch = Batch.objects.create(product=product, support_set=support_set, uploaded_by=users[OP], total=1)
    image = default_storage.save("inspections/q.png", ContentFile(png_bytes(2)))
    heatmap = default_storage.save("heatmaps/q.png", ContentFile(png_bytes(3)))
    inspection = Inspection.objects.create(
        batch=batch,
        support_set=support_set,
        image=image,
        heatmap=heatmap,
        original_name="q.png",
        status="done",
        verdict="review",
        score=1.0,
    )
    ClassifierVersion.objects.create(product=product, version=1, status="ready")
    args = {
        "product_id": product.pk,
        "batch_id": batch.pk,
        "inspection_id": inspection.pk,
        "team_id": team.pk,
        "user_id": target.pk,
        "version": 1,
        "path": image,
        "token_id": token_create(user=users[Role.ADMIN], name="admin's script")[0].pk,
    }
    data = {
        "review-decide": {"item": inspection.pk, "decision": "good"},
        "review-move": {"item": inspection.pk},
        "review-type-create": {"name": "crack"},
        "api-review": {"verdict": "good"},
        "api-defect-types": {"name": "crack"},
        "classifier": {"action": "none"},
        "defect-types": {"action": "none"},
        "team-members": {"action": "none"},
        "product-list": {"name": "new part"},
        "api-product-list": {"name": "new part"},
        "account-tokens": {"name": "ci"},
        "api-token-list": {"name": "ci"},
    }
    return users, args, data


def _request(client, name: str, method: str, args: dict, data: dict):
    pattern_args = _kwargs_of(name)
    url = reverse(name, kwargs={k: args[k] for k in pattern_args})
    payload = data.get(name, {})
    if name.startswith("api-") and name not in MULTIPART_APIS and method != "get":
        return getattr(client, method)(url, json.dumps(payload), content_type="application/json")
    return getattr(client, method)(url, payload)


def _kwargs_of(name: str) -> list[str]:
    [(possibility, _pattern, _defaults, _converters)] = get_resolver().reverse_dict.getlist(name)
    return possibility[0][1]


def _expected(name: str, minimum: str, persona: str) -> str:
    """'allowed', 'login', 'forbidden' (403) or 'absent' (404)."""
    if minimum == PUBLIC:
        return "allowed"
    if minimum == STAFF:
        return "unauthorized" if persona == ANON else "forbidden"  # no persona here is staff
    if persona == ANON:
        return "login"
    if minimum == SELF:
        return "allowed" if name in OBJECTLESS or persona == Role.ADMIN else "absent"
    if persona == OTHER:
        return "allowed" if name in OBJECTLESS else "absent"  # admin of their own team; nothing of this one
    return "allowed" if Role.at_least(persona, minimum) else "forbidden"


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_each_url_answers_each_persona_by_role(client, scene, name):
    users, args, data = scene
    for method, minimum in MATRIX[name].items():
        for persona in PERSONAS:
            client.logout()
            if persona != ANON:
                client.force_login(users[persona])
            response = _request(client, name, method, args, data)
            expected = _expected(name, minimum, persona)
            where = f"{method.upper()} {name} as {persona}: {response.status_code}"
            if expected == "login":
                if name.startswith("api-"):
                    assert response.status_code in (401, 403), where
                else:
                    assert response.status_code == 302 and "/login/" in response.url, where
            elif expected == "unauthorized":
                assert response.status_code == 401, where
            elif expected == "forbidden":
                assert response.status_code == 403, where
            elif expected == "absent":
                assert response.status_code == 404, where
            else:
                assert response.status_code < 500 and response.status_code not in (401, 403, 404), where
                if response.status_code == 302 and minimum != PUBLIC:
                    assert "/login/" not in response.url, where


def test_admin_needs_staff(client, scene):
    users, _, _ = scene
    client.force_login(users[Role.ADMIN])  # a team admin is not Django staff
    assert client.get("/admin/").status_code == 302


def test_media_of_another_team_is_404_and_own_team_gets_the_file(client, scene):
    users, args, _ = scene
    url = reverse("media", args=[args["path"]])
    client.force_login(users[OTHER])
    assert client.get(url).status_code == 404
    client.force_login(users[Role.OPERATOR])
    response = client.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content).startswith(b"\x89PNG")
    assert client.get(reverse("media", args=["support/s.png"])).status_code == 200
    assert client.get(reverse("media", args=["inspections/not-there.png"])).status_code == 404


def test_a_decision_by_a_reviewer_is_saved_and_an_operator_changes_nothing(client, scene):
    users, args, _ = scene
    url = reverse("api-review", args=[args["inspection_id"]])
    client.force_login(users[Role.OPERATOR])
    assert client.post(url, {"verdict": "good"}, content_type="application/json").status_code == 403
    assert Inspection.objects.get(pk=args["inspection_id"]).reviewed_verdict == ""
    client.force_login(users[Role.REVIEWER])
    assert client.post(url, {"verdict": "good"}, content_type="application/json").status_code == 200
    assert Inspection.objects.get(pk=args["inspection_id"]).reviewed_verdict == "good"


def test_product_list_shows_only_the_users_teams_products(client, scene):
    users, args, _ = scene
    ProductFactory(name="Secret part")  # another team's
    client.force_login(users[Role.OPERATOR])
    body = client.get(reverse("api-product-list")).json()
    assert [p["id"] for p in body] == [args["product_id"]]


# ---------------------------------------------------------------------------------------- product creation


def test_an_operator_cannot_create_a_product_and_a_lead_creates_it_in_their_team(scene):
    users, args, _ = scene
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        product_services.product_create(user=users[Role.OPERATOR], name="Bolt")
    product = product_services.product_create(user=users[Role.LEAD], name="Bolt")
    assert product.team_id == args["team_id"]
    assert AuditEvent.objects.filter(action=Action.PRODUCT_CREATE, object_id=str(product.pk)).exists()


def test_a_lead_of_two_teams_chooses_the_team_and_cannot_pick_a_team_they_only_operate_in(scene):
    users, args, _ = scene
    from django.core.exceptions import PermissionDenied

    lead = users[Role.LEAD]
    second = TeamFactory(members={lead: Role.LEAD})
    third = TeamFactory(members={lead: Role.OPERATOR})
    assert product_services.product_create(user=lead, name="Nut", team_id=second.pk).team_id == second.pk
    with pytest.raises(PermissionDenied):
        product_services.product_create(user=lead, name="Nut", team_id=third.pk)


def test_a_user_without_a_team_gets_a_personal_team_as_its_admin(db):
    user = UserFactory()
    product = product_services.product_create(user=user, name="Gear")
    assert Membership.objects.get(team=product.team, user=user).role == Role.ADMIN


# ------------------------------------------------------------------------------------------------ membership


def test_an_admin_adds_changes_and_removes_members_on_the_page(client, scene):
    users, args, _ = scene
    newcomer = UserFactory(username="newcomer")
    url = reverse("team-members", args=[args["team_id"]])
    client.force_login(users[Role.ADMIN])
    client.post(url, {"action": "add", "username": "newcomer", "role": "reviewer"})
    assert Membership.objects.get(team_id=args["team_id"], user=newcomer).role == Role.REVIEWER
    client.post(url, {"action": "role", "user": newcomer.pk, "role": "lead"})
    assert Membership.objects.get(team_id=args["team_id"], user=newcomer).role == Role.LEAD
    page = client.get(url).content.decode()
    assert "newcomer" in page and 'value="lead" selected' in page
    client.post(url, {"action": "remove", "user": newcomer.pk})
    assert not Membership.objects.filter(team_id=args["team_id"], user=newcomer).exists()
    actions = list(AuditEvent.objects.filter(team_id=args["team_id"]).values_list("action", flat=True))
    assert {Action.MEMBER_ADD, Action.ROLE_CHANGE, Action.MEMBER_REMOVE} <= set(actions)


def test_the_last_admin_can_be_neither_demoted_nor_removed(client, scene):
    users, args, _ = scene
    admin = users[Role.ADMIN]
    url = reverse("api-team-member", args=[args["team_id"], admin.pk])
    client.force_login(admin)
    r = client.patch(url, {"role": "lead"}, content_type="application/json")
    assert r.status_code == 400 and "last admin" in r.content.decode()
    assert client.delete(url).status_code == 400
    assert Membership.objects.get(team_id=args["team_id"], user=admin).role == Role.ADMIN
    # with a second admin, the first may step down
    second = reverse("api-team-member", args=[args["team_id"], users[Role.LEAD].pk])
    assert client.patch(second, {"role": "admin"}, content_type="application/json").json()["role"] == "admin"
    assert client.patch(url, {"role": "lead"}, content_type="application/json").status_code == 200


def test_the_members_api_adds_by_username_and_refuses_bad_input(client, scene):
    users, args, _ = scene
    UserFactory(username="newcomer")
    url = reverse("api-team-members", args=[args["team_id"]])
    client.force_login(users[Role.ADMIN])
    created = client.post(url, {"username": "newcomer", "role": "operator"}, content_type="application/json")
    assert created.status_code == 201 and created.json()["role"] == "operator"
    again = client.post(url, {"username": "newcomer", "role": "lead"}, content_type="application/json")
    assert again.status_code == 400 and "already a member" in again.content.decode()
    for bad in ({"username": "nobody", "role": "lead"}, {"username": "newcomer", "role": "boss"}):
        assert client.post(url, bad, content_type="application/json").status_code == 400, bad
    names = [m["username"] for m in client.get(url).json()]
    assert "newcomer" in names and "u-other" not in names
    teams = client.get(reverse("api-team-list")).json()
    assert teams == [{"id": args["team_id"], "name": teams[0]["name"], "role": "admin", "members": 6}]


def test_the_teams_page_lists_my_teams_with_my_role(client, scene):
    users, args, _ = scene
    client.force_login(users[Role.REVIEWER])
    page = client.get(reverse("team-list")).content.decode()
    assert "reviewer" in page and reverse("team-members", args=[args["team_id"]]) in page
    assert reverse("team-audit", args=[args["team_id"]]) not in page  # the audit log is for leads


@pytest.mark.django_db(transaction=True)
def test_existing_members_become_admins_through_migration_0006():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("products", "0005_supportset_progress")], [("products", "0006_membership_roles")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    user = old.get_model("auth", "User").objects.create(username="veteran")
    team = old.get_model("products", "Team").objects.create(name="Old team")
    team.members.add(user)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert Membership.objects.get(team_id=team.pk, user_id=user.pk).role == Role.ADMIN


def test_demo_user_is_admin_of_its_team_and_the_command_is_idempotent(db):
    from django.core.management import call_command

    call_command("demo_user")
    membership = Membership.objects.get(user__username="demo")
    Membership.objects.filter(pk=membership.pk).update(role=Role.OPERATOR)
    call_command("demo_user")
    assert Membership.objects.get(user__username="demo").role == Role.ADMIN
    assert Membership.objects.filter(user__username="demo").count() == 1
    assert Product.objects.count() == 0


def test_the_product_page_shows_an_operator_no_form_their_role_cannot_use(client, scene):
    users, args, _ = scene
    url = reverse("product-detail", args=[args["product_id"]])
    client.force_login(users[Role.OPERATOR])
    page = client.get(url).content.decode()
    assert reverse("support-upload", args=[args["product_id"]]) not in page
    assert reverse("review", args=[args["product_id"]]) not in page
    client.force_login(users[Role.LEAD])
    page = client.get(url).content.decode()
    assert reverse("support-upload", args=[args["product_id"]]) in page and 'data-testid="detector-form"' in page
