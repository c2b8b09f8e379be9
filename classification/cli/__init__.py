"""Command-line evaluators of the defect-type classifier; the library never imports this package.

    python -m classification.cli.evaluate DATA ...              prototype classifier on a dataset in MVTec AD layout
    python -m classification.cli.evaluate_contrastive DATA ...  contrastive residual encoder, same protocol
    python -m classification.cli.synthetic_benchmark ...        held-out synthetic defect types on a product's images

Shared by them: classification.cli.common (arguments, table, JSON); the episodes are classification.episodes.
"""
