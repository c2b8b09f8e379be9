"""A Celery worker for the fault tests: the real worker, with a small random-weight detector (the same weights as
the driver's, so its fitted support sets apply) and a thin wrapper around the adapter's `inspect` that

- logs each detector run to $FAULT_LOG ("start <image>" / "end <image>"), so a test can count runs per image;
- waits $FAULT_DELAY seconds before the detector, so a test can act while an image is in the detector;
- plays a poison image by its original name: "poison-raise*" raises, "poison-memory*" raises MemoryError,
  "poison-kill*" kills its own process (as a segfault or the kernel's OOM killer would).

Only the fault tests start this module; the app itself has no test hook. Usage: python -m tests.fault.worker
<celery worker arguments>."""

from __future__ import annotations

import os
import signal
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inspector.settings")
django.setup()

import torch  # noqa: E402

from detection import Detector, DetectorConfig  # noqa: E402
from inspector import ml  # noqa: E402
from inspector.celery import app  # noqa: E402
from inspector.inspections.models import Inspection  # noqa: E402
from tests.detection.helpers import random_resnet  # noqa: E402


def small_detector() -> Detector:
    return Detector(DetectorConfig(image_size=64), resnet=random_resnet(), device="cpu")


def _log(line: str) -> None:
    with open(os.environ["FAULT_LOG"], "a") as fh:
        fh.write(line + "\n")


def _wrap(real):
    delay = float(os.environ.get("FAULT_DELAY", "0"))

    def inspect(image_name: str, **kwargs):
        name = Inspection.objects.filter(image=image_name).values_list("original_name", flat=True).first() or ""
        _log(f"start {image_name} {os.getpid()}")
        time.sleep(delay)
        if name.startswith("poison-raise"):
            raise ValueError("the detector cannot handle this image")
        if name.startswith("poison-memory"):
            raise MemoryError()
        if name.startswith("poison-kill"):
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(image_name, **kwargs)
        _log(f"end {image_name} {os.getpid()}")
        return result

    return inspect


if __name__ == "__main__":
    torch.set_num_threads(1)
    ml.set_detector(small_detector())
    ml.inspect = _wrap(ml.inspect)
    app.worker_main(["worker", *sys.argv[1:]])
