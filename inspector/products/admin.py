from django.contrib import admin

from inspector.products.models import DefectType, Membership, Product, SupportImage, SupportSet, Team


class SupportImageInline(admin.TabularInline):
    model = SupportImage
    extra = 0
    readonly_fields = ["position", "original_name", "checksum", "width", "height"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name"]
    inlines = [MembershipInline]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "created_at"]
    list_select_related = ["team"]
    list_filter = ["team"]
    search_fields = ["name"]


@admin.register(SupportSet)
class SupportSetAdmin(admin.ModelAdmin):
    list_display = ["product", "version", "status", "method", "created_at", "fitted_at"]
    list_select_related = ["product"]
    list_filter = ["status", "method"]
    inlines = [SupportImageInline]


@admin.register(DefectType)
class DefectTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "product", "shortcut", "colour"]
    list_select_related = ["product"]
    list_filter = ["product"]
