"""Team members get a role: the plain many-to-many becomes Membership rows. Existing members become admins
of their team, so nobody loses an access they had."""

from django.conf import settings
from django.db import migrations, models
import django.db.models.deletion


def members_to_memberships(apps, schema_editor):
    Team = apps.get_model("products", "Team")
    Membership = apps.get_model("products", "Membership")
    old = Team.members.through.objects.values_list("team_id", "user_id")
    Membership.objects.bulk_create(Membership(team_id=t, user_id=u, role="admin") for t, u in old)


def memberships_to_members(apps, schema_editor):
    Team = apps.get_model("products", "Team")
    Membership = apps.get_model("products", "Membership")
    Through = Team.members.through
    Through.objects.bulk_create(
        Through(team_id=t, user_id=u) for t, u in Membership.objects.values_list("team_id", "user_id")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("products", "0005_supportset_progress"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Membership",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "role",
                    models.CharField(
                        choices=[("operator", "Operator"), ("reviewer", "Reviewer"), ("lead", "Lead"), ("admin", "Admin")],
                        default="operator",
                        max_length=10,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "team",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="memberships", to="products.team"
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="memberships",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["team", "user"],
                "constraints": [models.UniqueConstraint(fields=("team", "user"), name="membership_unique")],
            },
        ),
        migrations.RunPython(members_to_memberships, memberships_to_members),
        # The auto-created table goes; the field comes back on the Membership table (no schema change for it).
        migrations.RemoveField(model_name="team", name="members"),
        migrations.AddField(
            model_name="team",
            name="members",
            field=models.ManyToManyField(
                blank=True, related_name="teams", through="products.Membership", to=settings.AUTH_USER_MODEL
            ),
        ),
    ]
