from django.apps import AppConfig


class InspectionsConfig(AppConfig):
    name = "inspector.inspections"
    label = "inspections"
