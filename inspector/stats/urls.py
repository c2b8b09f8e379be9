from django.urls import path

from inspector.stats import apis, views

urlpatterns = [
    path("products/<id:product_id>/stats/", views.stats_page, name="product-stats"),
    path("api/products/<id:product_id>/stats/", apis.ProductStatsApi.as_view(), name="api-product-stats"),
    path("api/products/<id:product_id>/export.csv", apis.ProductExportApi.as_view(), name="api-product-export"),
    path("api/batches/<id:batch_id>/export.csv", apis.BatchExportApi.as_view(), name="api-batch-export"),
]
