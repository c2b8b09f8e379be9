"""Carry DRF's authtoken tokens (rest_framework.authtoken, used before this app) over as hashed API tokens, so
clients that hold one keep working. The old table is read only if it exists; the keys are hashed on the
way and the plain keys deleted."""

import hashlib

from django.db import migrations


def import_drf_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("accounts", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, user_id, created FROM authtoken_token")
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        digest = hashlib.sha256(key.encode()).hexdigest()
        if ApiToken.objects.filter(digest=digest).exists():
            continue
        token = ApiToken.objects.create(user_id=user_id, name="imported DRF token", prefix=key[:11], digest=digest)
        ApiToken.objects.filter(pk=token.pk).update(created_at=created)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM authtoken_token")  # the plain keys must not outlive their hashes


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_api_token")]
    operations = [migrations.RunPython(import_drf_tokens, migrations.RunPython.noop)]
