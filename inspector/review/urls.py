from django.urls import path

from inspector.review import views

urlpatterns = [
    path("products/<int:product_id>/review/", views.review_screen, name="review"),
    path("products/<int:product_id>/review/decide/", views.review_decide, name="review-decide"),
    path("products/<int:product_id>/review/undo/", views.review_undo, name="review-undo"),
    path("products/<int:product_id>/review/move/", views.review_move, name="review-move"),
    path("products/<int:product_id>/review/types/", views.review_type_create, name="review-type-create"),
    path("products/<int:product_id>/review/train/", views.review_train, name="review-train"),
    path("products/<int:product_id>/review/grid/", views.review_grid, name="review-grid"),
    path("products/<int:product_id>/review/bulk/", views.review_bulk, name="review-bulk"),
]
