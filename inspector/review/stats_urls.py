from django.urls import path

from inspector.review import stats_apis, stats_views

urlpatterns = [
    path("products/<int:product_id>/stats/", stats_views.product_stats, name="product-stats"),
    path("api/products/<int:product_id>/stats/", stats_apis.ProductStatsApi.as_view(), name="api-product-stats"),
    path("api/products/<int:product_id>/export.csv", stats_apis.ProductExportApi.as_view(), name="api-product-export"),
    path("api/batches/<int:batch_id>/export.csv", stats_apis.BatchExportApi.as_view(), name="api-batch-export"),
]
