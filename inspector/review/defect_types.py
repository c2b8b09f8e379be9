"""Defect types of a product: create, rename/restyle, merge, and the live (not merged) ones.

A merge moves every image of one type to another, one review event per image, so history keeps the old name.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F

from inspector.audit.models import Action
from inspector.audit.services import audit_record
from inspector.inspections.models import Inspection
from inspector.products.models import DefectType, Product
from inspector.review.models import ReviewEvent

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
COLOUR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


def _check_name(name: str | None) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "a defect type needs a name"})
    if len(name) > 100:
        raise ValidationError({"name": "at most 100 characters"})
    return name


def _check_colour(colour: str) -> str:
    if not COLOUR_RE.match(colour or ""):
        raise ValidationError({"colour": "a colour is #rrggbb"})
    return colour


def _check_shortcut(product: Product, shortcut: str, exclude: int | None = None) -> str:
    shortcut = (shortcut or "").strip()
    if not shortcut:
        return ""
    if len(shortcut) != 1 or shortcut not in "123456789":
        raise ValidationError({"shortcut": "a shortcut is one digit 1-9 (G, N, H and the arrows are taken)"})
    clash = product.defect_types.filter(shortcut=shortcut, merged_into__isnull=True).exclude(pk=exclude)
    if clash.exists():
        raise ValidationError({"shortcut": f"key {shortcut} is already {clash.first().name!r}"})
    return shortcut


def defect_type_create(
    *, product: Product, name: str, colour: str = "", shortcut: str = "", description: str = ""
) -> DefectType:
    """A new defect type; without a shortcut it gets the first free key 1..9, without a colour one of a palette."""
    name = _check_name(name)
    if colour:
        _check_colour(colour)
    with transaction.atomic():
        Product.objects.select_for_update().filter(pk=product.pk).first()  # serialise shortcut assignment
        live = product.defect_types.filter(merged_into__isnull=True)
        if shortcut:
            shortcut = _check_shortcut(product, shortcut)
        else:
            used = set(live.values_list("shortcut", flat=True))
            shortcut = next((k for k in "123456789" if k not in used), "")
        colour = colour or PALETTE[live.count() % len(PALETTE)]
        try:
            with transaction.atomic():
                created = DefectType.objects.create(
                    product=product, name=name, colour=colour, shortcut=shortcut, description=description
                )
        except IntegrityError:
            raise ValidationError({"name": f"this product already has a defect type named {name!r}"}) from None
        audit_record(
            action=Action.DEFECT_TYPE_CREATE,
            team=product.team_id,
            obj=created,
            details={"product": product.pk, "name": name, "shortcut": shortcut, "colour": colour},
        )
    return created


def defect_type_update(
    *,
    defect_type: DefectType,
    name: str | None = None,
    colour: str | None = None,
    shortcut: str | None = None,
    description: str | None = None,
) -> DefectType:
    """Rename or restyle. History keeps the old name (events copy names as they were)."""
    if defect_type.merged_into_id:
        raise ValidationError("this type was merged into another one and can no longer be edited")
    fields = ("name", "colour", "shortcut", "description")
    before = {f: getattr(defect_type, f) for f in fields}
    if name is not None:
        name = _check_name(name)
        defect_type.name = name
    if colour is not None:
        defect_type.colour = _check_colour(colour)
    if shortcut is not None:
        defect_type.shortcut = _check_shortcut(defect_type.product, shortcut, exclude=defect_type.pk)
    if description is not None:
        defect_type.description = description
    changed = {f: [before[f], getattr(defect_type, f)] for f in fields if getattr(defect_type, f) != before[f]}
    try:
        with transaction.atomic():
            defect_type.save()
            if changed:
                audit_record(
                    action=Action.DEFECT_TYPE_UPDATE,
                    team=defect_type.product.team_id,
                    obj=defect_type,
                    details={"product": defect_type.product_id, "changed": changed},
                )
    except IntegrityError:
        raise ValidationError({"name": f"this product already has a defect type named {name!r}"}) from None
    return defect_type


def defect_type_merge(*, source: DefectType, target: DefectType, user) -> int:
    """Move every image of `source` to `target` (one history event per image); `source` stays, hidden."""
    if source.product_id != target.product_id or source.pk == target.pk:
        raise ValidationError("merge two different types of the same product")
    with transaction.atomic():
        # Both rows locked in a fixed order and re-read: two merges at once (A->B with B->C, or A->B with B->A)
        # run one after the other, and the second sees the first.
        locked = {t.pk: t for t in DefectType.objects.select_for_update().filter(pk__in=[source.pk, target.pk])}
        source, target = locked[source.pk], locked[target.pk]
        if source.merged_into_id or target.merged_into_id:
            raise ValidationError("one of these types was already merged")
        moved = list(Inspection.objects.select_for_update().filter(confirmed_type=source))
        ReviewEvent.objects.bulk_create(
            ReviewEvent(
                inspection=i,
                kind=ReviewEvent.Kind.MERGE,
                user=user,
                old_verdict=i.reviewed_verdict,
                new_verdict=i.reviewed_verdict,
                old_type=source.name,
                old_type_ref=source,
                new_type=target.name,
                new_type_ref=target,
            )
            for i in moved
        )
        Inspection.objects.filter(confirmed_type=source).update(
            confirmed_type=target, review_version=F("review_version") + 1
        )
        Inspection.objects.filter(predicted_type=source).update(predicted_type=target)
        source.merged_into = target
        source.shortcut = ""
        source.save(update_fields=["merged_into", "shortcut"])
        audit_record(
            action=Action.DEFECT_TYPE_MERGE,
            team=source.product.team_id,
            actor=user,
            obj=source,
            details={"product": source.product_id, "source": source.name, "target": target.name}
            | {"target_id": target.pk, "images_moved": len(moved)},
        )
    return len(moved)


def defect_types_live(*, product: Product) -> list[DefectType]:
    return list(product.defect_types.filter(merged_into__isnull=True).order_by("shortcut", "name"))


def defect_type_current(defect_type: DefectType | None) -> DefectType | None:
    """The type, or the one it was merged into (following a chain of merges)."""
    seen = set()
    while defect_type is not None and defect_type.merged_into_id and defect_type.pk not in seen:
        seen.add(defect_type.pk)
        defect_type = defect_type.merged_into
    return defect_type
