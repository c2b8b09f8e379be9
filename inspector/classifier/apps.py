from __future__ import annotations

from django.apps import AppConfig


class ClassifierConfig(AppConfig):
    name = "inspector.classifier"
    label = "classifier"

    def ready(self) -> None:
        # Review sits below the classifier and must not import it: a decision that confirms a defect type runs the
        # hooks registered with review (after its commit), and this one trains a new version when enough new
        # labels came in (see inspector.review.services.on_type_confirmed).
        from inspector.classifier.services import classifier_train_if_due
        from inspector.review.services import on_type_confirmed

        on_type_confirmed(classifier_train_if_due)
