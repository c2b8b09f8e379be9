"""Sets up a scenario for a fault test in its own database, as the app would: a user with an API token, a product
with a fitted support set (the same small random-weight detector as tests.fault.worker), and a batch uploaded
through the service, queued on the broker. Prints {"batch", "product", "token", "inspections"} as JSON.

Usage: python -m tests.fault.driver NAME [NAME ...]  (file names of the batch; see worker.py for poison names)"""

from __future__ import annotations

import json
import os
import sys
from unittest import mock

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inspector.settings")
django.setup()

import torch  # noqa: E402

from inspector import ml  # noqa: E402
from inspector.accounts.services import token_create  # noqa: E402
from inspector.inspections import services as inspection_services  # noqa: E402
from inspector.products import services as product_services  # noqa: E402
from inspector.products.tasks import support_set_fit_task  # noqa: E402
from tests.app.factories import TeamFactory, UserFactory, png_bytes, upload  # noqa: E402
from tests.fault.worker import small_detector  # noqa: E402


def main(names: list[str]) -> dict:
    torch.set_num_threads(1)
    ml.set_detector(small_detector())
    user = UserFactory()
    TeamFactory(members=[user])
    product = product_services.product_create(user=user, name="Fault")
    # Fitted here, not on the broker: a worker already running would otherwise race this process for the claim.
    with mock.patch.object(support_set_fit_task, "delay"):
        support_set, _ = product_services.support_set_create(
            product=product, user=user, files=[upload(f"good{i}.png", png_bytes(100 + i)) for i in range(3)]
        )
    product_services.support_set_fit(support_set_id=support_set.pk)
    files = [upload(name, png_bytes(seed)) for seed, name in enumerate(names)]
    batch = inspection_services.batch_create(product=product, user=user, files=files, lot="FAULT")
    return {
        "batch": batch.pk,
        "product": product.pk,
        "token": token_create(user=user, name="fault test")[1],
        "inspections": list(batch.inspections.order_by("id").values_list("id", flat=True)),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
