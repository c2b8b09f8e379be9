"""The method registry: one list of methods that the config, the detector, the evaluators and the app read."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from detection import DetectorConfig, registry
from detection.cli.compare import ORDER
from detection.dfd import DFDConfig
from detection.fastrecon import FastReconConfig
from detection.method import Method


def test_every_registered_method_names_itself_and_has_a_valid_default_config():
    assert registry.names() == ("fastrecon", "patchcore", "patchcore_plus", "dfd")
    for name, method in registry.METHODS.items():
        assert isinstance(method, Method) and method.name == name
        assert method.label and method.description
        config = method.config_type()
        assert 0 < config.bank_ratio <= 1
        assert set(method.config_type.LEGACY_KEYS) <= {f.name for f in fields(config)}
        assert registry.method_of_config(config) == name


def test_labels_read_as_the_product_page_showed_them():
    assert registry.label("patchcore_plus") == "PatchCore+"
    assert registry.label("winclip") == "winclip"  # an unknown name (an old JSON file) is shown as it is
    assert registry.describe("patchcore") == "PatchCore (nearest good patch)"


def test_an_unknown_method_is_refused_with_the_registered_names():
    with pytest.raises(ValueError, match="fastrecon.*dfd"):
        DetectorConfig(method="winclip")


def test_another_methods_default_settings_do_not_stop_switching_method():
    switched = replace(DetectorConfig(), method="dfd")  # what the classification evaluators do
    assert switched.method_config == DFDConfig()


def test_method_configs_are_kept_across_methods_and_defaults_are_left_out():
    small = DFDConfig(max_steps=5)
    config = DetectorConfig(image_size=64, method_configs=[small, FastReconConfig()])
    assert config.method_configs == (small,) and config.method_config == FastReconConfig()
    assert replace(config, method="dfd").method_config == small
    with pytest.raises(ValueError, match="two configs"):
        DetectorConfig(method_configs=(small, DFDConfig()))
    with pytest.raises(ValueError, match="not the config of a registered method"):
        DetectorConfig(method_configs=("max_steps=5",))


def test_config_round_trips_through_a_plain_dict_and_refuses_unknown_keys():
    config = DetectorConfig(method="dfd", image_size=64, method_configs=(DFDConfig(max_steps=5),))
    assert DetectorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown config keys"):
        DetectorConfig.from_dict({**config.to_dict(), "dfd_max_steps": 5})
    with pytest.raises(ValueError, match="unknown dfd config keys"):
        DetectorConfig.from_dict({**config.to_dict(), "method_configs": {"dfd": {"steps": 5}}})


def test_the_side_by_side_table_lists_the_baseline_first_then_the_registry():
    assert ORDER == ("patchcore", "fastrecon", "patchcore_plus", "dfd")
