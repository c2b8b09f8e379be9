from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "inspector.review"
    label = "review"
