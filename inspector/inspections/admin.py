from django.contrib import admin

from inspector.inspections.models import Batch, Inspection, RejectedFile


class RejectedFileInline(admin.TabularInline):
    model = RejectedFile
    extra = 0


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ["id", "product", "support_set", "uploaded_by", "created_at", "lot", "line", "total"]
    list_select_related = ["product", "support_set__product", "uploaded_by"]
    raw_id_fields = ["support_set"]
    list_filter = ["product"]
    inlines = [RejectedFileInline]


@admin.register(Inspection)
class InspectionAdmin(admin.ModelAdmin):
    list_display = ["id", "batch", "original_name", "status", "score", "verdict", "detect_ms"]
    list_select_related = ["batch__product"]
    raw_id_fields = ["batch", "support_set", "nearest_support"]
    list_filter = ["status", "verdict"]
    search_fields = ["original_name", "checksum"]
