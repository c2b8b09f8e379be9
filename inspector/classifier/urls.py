from django.urls import path

from inspector.classifier import apis, views

urlpatterns = [
    path("products/<id:product_id>/classifier/", views.classifier, name="classifier"),
    path("products/<id:product_id>/review/train/", views.review_train, name="review-train"),
    path("api/products/<id:product_id>/classifier/", apis.ClassifierApi.as_view(), name="api-classifier"),
    path(
        "api/products/<id:product_id>/classifier/train/",
        apis.ClassifierTrainApi.as_view(),
        name="api-classifier-train",
    ),
    path(
        "api/products/<id:product_id>/classifier/<id:version>/promote/",
        apis.ClassifierPromoteApi.as_view(),
        name="api-classifier-promote",
    ),
    path(
        "api/products/<id:product_id>/classifier/rollback/",
        apis.ClassifierRollbackApi.as_view(),
        name="api-classifier-rollback",
    ),
]
