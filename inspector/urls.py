from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, register_converter
from drf_spectacular.views import SpectacularAPIView

from inspector.accounts import apis as account_apis
from inspector.accounts import views as account_views
from inspector.inspections import apis as inspection_apis
from inspector.inspections import views as inspection_views
from inspector.ops import views as ops_views
from inspector.params import DbIdConverter
from inspector.products import apis as product_apis
from inspector.products import team_apis, team_views
from inspector.products import views as product_views

# Every object id in a URL is `<id:...>`: digits within the database's integer range, else 404 (issue 20).
register_converter(DbIdConverter, "id")

urlpatterns = [
    path("", product_views.product_list, name="product-list"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/tokens/", account_views.tokens, name="account-tokens"),
    path("account/tokens/<id:token_id>/revoke/", account_views.token_revoke, name="account-token-revoke"),
    path("api/tokens/", account_apis.TokenListApi.as_view(), name="api-token-list"),
    path("api/tokens/<id:token_id>/", account_apis.TokenDetailApi.as_view(), name="api-token-detail"),
    path("products/<id:product_id>/", product_views.product_detail, name="product-detail"),
    path("products/<id:product_id>/support/", product_views.support_upload, name="support-upload"),
    path("products/<id:product_id>/detector/", product_views.product_detector, name="product-detector"),
    path("products/<id:product_id>/batches/", inspection_views.batch_upload, name="batch-upload"),
    path("batches/<id:batch_id>/", inspection_views.batch_detail, name="batch-detail"),
    path("inspections/<id:inspection_id>/", inspection_views.inspection_detail, name="inspection-detail"),
    path("media/<path:path>", inspection_views.media, name="media"),
    path("teams/", team_views.team_list, name="team-list"),
    path("teams/<id:team_id>/members/", team_views.team_members, name="team-members"),
    path("teams/<id:team_id>/audit/", team_views.team_audit, name="team-audit"),
    path("teams/<id:team_id>/audit.csv", team_views.team_audit_csv, name="team-audit-csv"),
    path("", include("inspector.review.urls")),
    path("", include("inspector.classifier.urls")),
    path("", include("inspector.stats.urls")),
    path("healthz", ops_views.healthz, name="healthz"),
    path("metrics", ops_views.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/teams/", team_apis.TeamListApi.as_view(), name="api-team-list"),
    path("api/teams/<id:team_id>/members/", team_apis.TeamMembersApi.as_view(), name="api-team-members"),
    path(
        "api/teams/<id:team_id>/members/<id:user_id>/", team_apis.TeamMemberApi.as_view(), name="api-team-member"
    ),
    path("api/teams/<id:team_id>/audit/", team_apis.TeamAuditApi.as_view(), name="api-team-audit"),
    path("api/products/", product_apis.ProductListApi.as_view(), name="api-product-list"),
    path("api/products/<id:product_id>/", product_apis.ProductDetailApi.as_view(), name="api-product-detail"),
    path(
        "api/products/<id:product_id>/support-images/",
        product_apis.SupportImagesApi.as_view(),
        name="api-support-images",
    ),
    path(
        "api/products/<id:product_id>/detector/",
        product_apis.ProductDetectorApi.as_view(),
        name="api-product-detector",
    ),
    path("api/products/<id:product_id>/batches/", inspection_apis.BatchListApi.as_view(), name="api-batch-list"),
    path("api/batches/<id:batch_id>/", inspection_apis.BatchDetailApi.as_view(), name="api-batch-detail"),
]

handler400 = "inspector.api_errors.bad_request"
handler403 = "inspector.api_errors.permission_denied"
handler404 = "inspector.api_errors.not_found"
handler500 = "inspector.api_errors.server_error"
