from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import Http404

from inspector.products.models import Membership, Product, Role, SupportSet, Team

# ------------------------------------------------------------------------------------------------- access
# One access layer for every view and API endpoint: an object of a team the user is not a member of does not
# exist for them (404, the same answer as a wrong id: no probing for ids), and a member whose role is below
# the one the action needs gets 403 with the role it needs.


def role_in_team(*, user, team_id: int) -> str | None:
    """The user's role in the team, None when not a member (or not logged in)."""
    if not getattr(user, "is_authenticated", False):
        return None
    return Membership.objects.filter(team_id=team_id, user_id=user.pk).values_list("role", flat=True).first()


def team_access_check(*, user, team_id: int, role: str, what: str) -> str:
    """Raise 404 (not a member) or PermissionDenied (role below `role`); return the user's role."""
    have = role_in_team(user=user, team_id=team_id)
    if have is None:
        raise Http404(f"no such {what}")
    if not Role.at_least(have, role):
        raise PermissionDenied(f"this needs the {role} role in the team (yours: {have})")
    return have


def team_get_for_user(*, user, team_id: int, role: str = Role.OPERATOR) -> Team:
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        raise Http404("no such team")
    team.user_role = team_access_check(user=user, team_id=team.pk, role=role, what="team")
    return team


def teams_for_user(*, user) -> QuerySet[Team]:
    """The user's teams, each with `user_role` and `n_members`."""
    mine = Membership.objects.filter(user_id=user.pk)
    return (
        Team.objects.filter(pk__in=mine.values("team_id"))
        .annotate(
            user_role=Subquery(mine.filter(team_id=OuterRef("pk")).values("role")[:1]),
            n_members=Count("memberships"),
        )
        .order_by("name")
    )


def teams_with_role(*, user, role: str) -> QuerySet[Team]:
    """The user's teams in which they have at least `role`."""
    roles = [r for r in Role.values if Role.at_least(r, role)]
    return Team.objects.filter(memberships__user=user, memberships__role__in=roles).order_by("id")


def team_members(*, team: Team) -> QuerySet[Membership]:
    return team.memberships.select_related("user").order_by("user__username")


def product_list_for_user(*, user) -> QuerySet[Product]:
    return Product.objects.filter(team__memberships__user=user).select_related("team").distinct()


def product_get_for_user(*, user, product_id: int, role: str = Role.OPERATOR) -> Product:
    """The product, if the user is a member of its team with at least `role`: 404 when it does not exist or is
    another team's, 403 when the user's role is too low."""
    product = Product.objects.select_related("team").filter(pk=product_id).first()
    if product is None:
        raise Http404("no such product")
    product.user_role = team_access_check(user=user, team_id=product.team_id, role=role, what="product")
    return product


def support_set_active(*, product: Product) -> SupportSet | None:
    """The newest ready version: the one new batches are judged by."""
    return product.support_sets.filter(status=SupportSet.Status.READY).order_by("-version").first()


def support_set_latest(*, product: Product) -> SupportSet | None:
    return product.support_sets.order_by("-version").first()


def support_sets_latest(*, products: list[Product]) -> dict[int, SupportSet]:
    """{product id: its newest support set, with n_images}, in one query whatever the number of products."""
    newest = (
        SupportSet.objects.filter(product__in=products)
        .annotate(n_images=Count("images"))
        .order_by("product_id", "-version")
    )
    out: dict[int, SupportSet] = {}
    for support_set in newest:
        out.setdefault(support_set.product_id, support_set)
    return out
