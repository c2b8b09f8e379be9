from django.urls import path

from inspector.review import apis, manage_views, views

urlpatterns = [
    path("products/<id:product_id>/review/", views.review_screen, name="review"),
    path("products/<id:product_id>/review/decide/", views.review_decide, name="review-decide"),
    path("products/<id:product_id>/review/undo/", views.review_undo, name="review-undo"),
    path("products/<id:product_id>/review/move/", views.review_move, name="review-move"),
    path("products/<id:product_id>/review/types/", views.review_type_create, name="review-type-create"),
    path("products/<id:product_id>/review/grid/", views.review_grid, name="review-grid"),
    path("products/<id:product_id>/review/bulk/", views.review_bulk, name="review-bulk"),
    path("products/<id:product_id>/defect-types/", manage_views.defect_types, name="defect-types"),
    path(
        "products/<id:product_id>/false-alarms-to-support/",
        manage_views.false_alarms_to_support,
        name="false-alarms-to-support",
    ),
    path("api/products/<id:product_id>/defect-types/", apis.DefectTypesApi.as_view(), name="api-defect-types"),
    path("api/inspections/<id:inspection_id>/", apis.InspectionDetailApi.as_view(), name="api-inspection"),
    path("api/inspections/<id:inspection_id>/review/", apis.ReviewApi.as_view(), name="api-review"),
]
