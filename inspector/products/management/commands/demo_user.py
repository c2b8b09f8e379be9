from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from inspector.products.models import Membership, Role
from inspector.products.services import team_for_user


class Command(BaseCommand):
    help = (
        "Create the local demo login (if missing), admin of its team, and print it. Idempotent. "
        "For `make run` only, never in production."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="inspector-demo")

    def handle(self, *args, username: str, password: str, **options):
        User = get_user_model()
        with transaction.atomic():
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": True, "is_superuser": True}
            )
            if created:
                user.set_password(password)
                user.save(update_fields=["password"])
            team = team_for_user(user=user)
            Membership.objects.update_or_create(team=team, user=user, defaults={"role": Role.ADMIN})
        shown = password if created else "(unchanged)"
        self.stdout.write(f"Demo login: user {username!r}, password {shown!r}, admin of team {team.name!r}")
