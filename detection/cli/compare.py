"""Side-by-side table of `detection.cli.evaluate` results (the README's), from their JSON files.

    python -m detection.cli.compare out/eval_*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from detection import registry

# The baseline first, then the registry's order; methods it does not know (old JSON files) last.
ORDER = (registry.BASELINE, *(name for name in registry.names() if name != registry.BASELINE))


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def side_by_side(results: list[dict]) -> str:
    """Markdown: one row per dataset, method and number of shots. "Flagged" is a score above the fitted good_max
    threshold (from good images only): the share of the test set's defective and good images the product would
    send to review or reject."""
    lines = [
        "| dataset | method | shots | image AUROC % | pixel AUROC % | defects flagged % | good flagged % | fit s "
        "| query ms/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    key = {m: i for i, m in enumerate(ORDER)}
    for r in sorted(results, key=lambda r: (r["dataset"], key.get(r["method"], len(ORDER)))):
        for row in r["results"]:
            cells = [
                r["dataset"],
                registry.label(r["method"]),
                str(row["shots"]),
                _num(row["image_auroc"], ".2f"),
                _num(row["pixel_auroc"], ".2f"),
                _num(row.get("defect_caught_pct"), ".0f"),
                _num(row.get("good_flagged_pct"), ".0f"),
                _num(row.get("fit_s"), ".1f"),
                _num(row.get("query_ms"), ".0f"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+", help="JSON files written by detection.cli.evaluate --json")
    args = parser.parse_args(argv)
    print(side_by_side([json.loads(f.read_text()) for f in args.files]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
