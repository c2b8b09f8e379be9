from __future__ import annotations

import io

import factory
import numpy as np
from django.contrib.auth import get_user_model
from PIL import Image

from inspector.products.models import Product, Role, Team
from tests.detection.helpers import part_image


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests-123")


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Team {n}")

    @factory.post_generation
    def members(self, create, extracted, **kwargs):
        """members=[user, ...] (admins: full access, as before roles) or {user: role, ...}."""
        roles = extracted if isinstance(extracted, dict) else {user: Role.ADMIN for user in extracted or ()}
        for user, role in roles.items():
            self.members.add(user, through_defaults={"role": role})


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"Part {n}")


def png_bytes(seed: int = 0, defect: bool = False, size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(part_image(np.random.default_rng(seed), size=size, defect=defect)).save(buf, format="PNG")
    return buf.getvalue()


def upload(name: str, data: bytes) -> tuple[str, io.BytesIO]:
    return name, io.BytesIO(data)
