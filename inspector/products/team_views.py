"""Team pages: my teams and my role in each; a team's members, managed by its admins."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from inspector.products import selectors, services
from inspector.products.models import Role


@login_required
@require_GET
def team_list(request: HttpRequest) -> HttpResponse:
    return render(request, "products/teams.html", {"teams": selectors.teams_for_user(user=request.user)})


def _user_id(value: str) -> int:
    if not str(value).isdigit():
        raise ValidationError({"user": "no such member of this team"})
    return int(value)


@login_required
@require_http_methods(["GET", "POST"])
def team_members(request: HttpRequest, team_id: int) -> HttpResponse:
    """Every member sees who is in the team; adding, changing roles and removing need the admin role."""
    role = Role.ADMIN if request.method == "POST" else Role.OPERATOR
    team = selectors.team_get_for_user(user=request.user, team_id=team_id, role=role)
    if request.method == "POST":
        post = request.POST
        action = post.get("action", "")
        try:
            if action == "add":
                m = services.membership_add(
                    team=team, actor=request.user, username=post.get("username", ""), role=post.get("role", "")
                )
                messages.success(request, f"{m.user.get_username()} added as {m.role}.")
            elif action == "role":
                m = services.membership_role_set(
                    team=team, actor=request.user, user_id=_user_id(post.get("user", "")), role=post.get("role", "")
                )
                messages.success(request, f"{m.user.get_username()} is now {m.role}.")
            elif action == "remove":
                services.membership_remove(team=team, actor=request.user, user_id=_user_id(post.get("user", "")))
                messages.success(request, "Member removed.")
            else:
                raise ValidationError("unknown action")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("team-members", team_id=team.pk)
        if not selectors.role_in_team(user=request.user, team_id=team.pk):
            return redirect("team-list")  # an admin who removed themselves
        return redirect("team-members", team_id=team.pk)
    context = {
        "team": team,
        "members": selectors.team_members(team=team),
        "roles": Role.choices,
        "is_admin": team.user_role == Role.ADMIN,
        "is_lead": Role.at_least(team.user_role, Role.LEAD),
    }
    return render(request, "products/members.html", context)
