"""Time a real batch end to end through whatever stack is configured (a worker must be running).

    python manage.py bench_batch ../shared/datasets/mvtec_bottle --count 100 --shots 4

Creates a throwaway product, fits it on `--shots` train/good images, uploads `--count` images (test/*,
then more train/good), waits for the batch, prints wall time, images/s and the app's overhead per image
beyond the detector's own time (its predict call; the rest, heatmap rendering included, is queueing,
database, storage, decoding for the task).
"""

from __future__ import annotations

import io
import statistics
import time
import uuid
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max, Min

from inspector.inspections import services as inspection_services
from inspector.inspections.models import Inspection
from inspector.products import services as product_services
from inspector.products.models import SupportSet


def _files(paths: list[Path]) -> list[tuple[str, io.BytesIO]]:
    return [(p.name, io.BytesIO(p.read_bytes())) for p in paths]


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser):
        parser.add_argument("data", type=Path)
        parser.add_argument("--count", type=int, default=100)
        parser.add_argument("--shots", type=int, default=4)
        parser.add_argument("--timeout", type=int, default=1800)

    def handle(self, *args, data: Path, count: int, shots: int, timeout: int, **opts):
        train = sorted((data / "train" / "good").glob("*.png"))
        tests = sorted(p for p in (data / "test").glob("*/*.png"))
        images = (tests + train[shots:])[:count]
        if len(images) < count or len(train) < shots:
            raise CommandError(f"{data} has too few images for {count} + {shots}")
        user, _ = get_user_model().objects.get_or_create(username="bench")
        product = product_services.product_create(user=user, name=f"bench-{uuid.uuid4().hex[:8]}")
        t = time.perf_counter()
        support_set, _ = product_services.support_set_create(product=product, user=user, files=_files(train[:shots]))
        self._wait(lambda: SupportSet.objects.get(pk=support_set.pk).status in ("ready", "failed"), timeout, "fit")
        support_set.refresh_from_db()
        if support_set.status != "ready":
            raise CommandError(f"fitting failed: {support_set.error}")
        self.stdout.write(
            f"support set fitted in {time.perf_counter() - t:.1f} s wall ({support_set.fit_seconds:.1f} s fit)"
        )

        files = _files(images)
        t0 = time.perf_counter()
        batch = inspection_services.batch_create(product=product, user=user, files=files)
        upload_s = time.perf_counter() - t0
        pending = batch.inspections.filter(status__in=[Inspection.Status.QUEUED, Inspection.Status.RUNNING])
        self._wait(lambda: not pending.exists(), timeout, "the batch")
        wall = time.perf_counter() - t0
        done = batch.inspections.filter(status=Inspection.Status.DONE)
        detect = list(done.values_list("detect_ms", flat=True))
        span = batch.inspections.aggregate(first=Min("started_at"), last=Max("finished_at"))
        worker_s = (span["last"] - span["first"]).total_seconds()
        per_image = worker_s / len(detect) * 1e3
        mean_detect = statistics.fmean(detect)
        self.stdout.write(
            f"{count} images: wall {wall:.1f} s from upload to last result (upload+validation {upload_s:.1f} s), "
            f"{count / wall:.2f} images/s; failed {batch.inspections.filter(status='failed').count()}\n"
            f"worker: {per_image:.0f} ms/image from first start to last finish; detector (predict) "
            f"{mean_detect:.0f} ms/image; app overhead {per_image - mean_detect:.0f} ms/image = "
            f"{(per_image - mean_detect) / mean_detect * 100:.1f}% of the detector's time"
        )

    @staticmethod
    def _wait(predicate, timeout: int, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.5)
        raise CommandError(f"timed out waiting for {what}")
