from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from inspector import apis
from inspector.inspections import views as inspection_views
from inspector.products import views as product_views

urlpatterns = [
    path("", product_views.product_list, name="product-list"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("products/<int:product_id>/", product_views.product_detail, name="product-detail"),
    path("products/<int:product_id>/support/", product_views.support_upload, name="support-upload"),
    path("products/<int:product_id>/batches/", inspection_views.batch_upload, name="batch-upload"),
    path("batches/<int:batch_id>/", inspection_views.batch_detail, name="batch-detail"),
    path("inspections/<int:inspection_id>/", inspection_views.inspection_detail, name="inspection-detail"),
    path("media/<path:path>", inspection_views.media, name="media"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/products/", apis.ProductListApi.as_view(), name="api-product-list"),
    path("api/products/<int:product_id>/", apis.ProductDetailApi.as_view(), name="api-product-detail"),
    path("api/products/<int:product_id>/support-images/", apis.SupportImagesApi.as_view(), name="api-support-images"),
    path("api/products/<int:product_id>/batches/", apis.BatchListApi.as_view(), name="api-batch-list"),
    path("api/batches/<int:batch_id>/", apis.BatchDetailApi.as_view(), name="api-batch-detail"),
]
