from django.apps import AppConfig


class ProductsConfig(AppConfig):
    name = "inspector.products"
    label = "products"
