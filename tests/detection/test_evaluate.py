from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from detection import Detector, DetectorConfig
from detection.cli.common import apply_overrides, choose_support
from detection.cli.evaluate import evaluate, format_table, main

from .helpers import part_image, random_resnet


def _write_dataset(root, with_masks: bool = True):
    rng = np.random.default_rng(0)
    for i in range(6):
        (root / "train" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(part_image(rng)).save(root / "train" / "good" / f"{i:03d}.png")
    for kind, defect in (("good", False), ("scratch", True)):
        (root / "test" / kind).mkdir(parents=True, exist_ok=True)
        for i in range(5):
            img = part_image(rng, defect=defect)
            Image.fromarray(img).save(root / "test" / kind / f"{i:03d}.png")
            if defect and with_masks:
                (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                mask = (img[:, :, 0] == 0).astype(np.uint8) * 255
                Image.fromarray(mask).save(root / "ground_truth" / kind / f"{i:03d}_mask.png")


@pytest.fixture(scope="module")
def detector():
    return Detector(DetectorConfig(image_size=64), resnet=random_resnet(), device="cpu")


def test_evaluation_on_a_tiny_synthetic_set_reports_the_published_protocol_fields(tmp_path, detector):
    _write_dataset(tmp_path)
    result = evaluate(tmp_path, detector, shots=[1, 2], seeds=2)
    json.dumps(result)  # serialisable
    assert result["method"] == "fastrecon" and result["size"] == 64
    assert [r["shots"] for r in result["results"]] == [1, 2]
    for row in result["results"]:
        assert row["image_auroc"] >= 90  # the dark bar is easy even for random features
        assert 50 < row["pixel_auroc"] <= 100
        assert row["image_auroc_std"] >= 0 and row["pixel_auroc_std"] >= 0
    assert set(result["timing"]) >= {"fit_s", "query_ms"}
    assert all(row["fit_s"] > 0 and row["query_ms"] > 0 for row in result["results"])  # cost per number of shots
    assert "fastrecon" in format_table(result)


def test_dataset_without_defect_pixels_reports_pixel_metrics_as_null(tmp_path, detector):
    _write_dataset(tmp_path, with_masks=False)
    result = evaluate(tmp_path, detector, shots=[1], seeds=1)
    assert result["results"][0]["pixel_auroc"] is None
    assert "n/a" in format_table(result)


def test_support_choice_is_seeded_and_without_repeats():
    assert choose_support(50, 4, 0) == choose_support(50, 4, 0)
    assert choose_support(50, 4, 0) != choose_support(50, 4, 1)
    assert len(set(choose_support(10, 10, 3))) == 10
    with pytest.raises(ValueError, match="only 3"):
        choose_support(3, 4, 0)


def test_side_by_side_table_has_a_row_per_dataset_method_and_shots():
    from detection.cli.compare import side_by_side

    def result(method, dataset, auroc):
        row = {"image_auroc": auroc, "pixel_auroc": None, "fit_s": 1.25, "query_ms": 80.4}
        row |= {"defect_caught_pct": 87.5, "good_flagged_pct": 0.0}
        rows = [{"shots": k, **row} for k in (1, 2)]
        return {"method": method, "dataset": dataset, "results": rows}

    table = side_by_side([result("dfd", "cookies", 90.0), result("patchcore", "cookies", 91.5)]).splitlines()
    assert len(table) == 2 + 4
    assert table[2] == "| cookies | PatchCore | 1 | 91.50 | n/a | 88 | 0 | 1.2 | 80 |"  # PatchCore first, as in ORDER
    assert table[4].startswith("| cookies | DFD | 1 | 90.00 |")


def test_set_overrides_are_typed_by_their_field_and_unknown_fields_are_refused():
    config = apply_overrides(DetectorConfig(), ["dfd_window=32", "noise_std=0.2", "method=dfd", "seed=3"])
    assert config.method == "dfd" and config.seed == 3
    assert config.method_config.window == 32 and config.method_config.noise_std == 0.2
    with pytest.raises(SystemExit, match="not a int"):
        apply_overrides(DetectorConfig(), ["dfd_window=wide"])
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        apply_overrides(DetectorConfig(), ["no_such_field=1"])
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        apply_overrides(DetectorConfig(), ["dfd_window"])
    with pytest.raises(SystemExit, match="FIELD=VALUE"):
        apply_overrides(DetectorConfig(method="patchcore"), ["window=32"])  # not a PatchCore field


def test_a_prefixed_field_sets_that_methods_config_whichever_method_runs():
    config = apply_overrides(DetectorConfig(method="patchcore"), ["fastrecon_lambda=0.3", "bank_ratio=0.2"])
    assert config.method_config.bank_ratio == 0.2
    assert config.config_for("fastrecon").lam == 0.3 and config.config_for("fastrecon").bank_ratio == 0.1


def test_method_choices_come_from_the_registry(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "{fastrecon,patchcore,patchcore_plus,dfd}" in out.replace("\n", "").replace(" ", "")
