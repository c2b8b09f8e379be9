from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import Http404

from inspector.products.models import Product, SupportSet


def product_list_for_user(*, user) -> QuerySet[Product]:
    return Product.objects.filter(team__members=user).select_related("team").distinct()


def product_get_for_user(*, user, product_id: int) -> Product:
    """The product, if the user's team owns it: 404 when it does not exist, 403 when it is another team's."""
    try:
        product = Product.objects.select_related("team").get(pk=product_id)
    except Product.DoesNotExist:
        raise Http404("no such product") from None
    if not product.team.members.filter(pk=user.pk).exists():
        raise PermissionDenied("this product belongs to another team")
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
