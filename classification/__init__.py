"""Few-shot defect-type classification (plain PyTorch, no Django): the package of the classifier issue.

It will consume what `detection` returns with `return_features=True` (patch features, nearest memory-bank
index, residuals, anomaly map). Nothing is implemented here yet.
"""
