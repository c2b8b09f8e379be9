"""Command-line tools over the detection package: `python -m detection.cli.<tool>`.

evaluate (few-shot AUROC / F1 on a dataset in MVTec AD layout), compare (the README's side-by-side table from
evaluate's JSON), benchmark (where the time goes), dfd_maps (AUROC of each of DFD's four maps). The library
never imports these.
"""
