import dataclasses
import json
import re
import subprocess
import sys
import tomllib

import pytest

from tl.config import FIELD_HELP, OPTIMIZER_DESCRIPTIONS, OPTIMIZERS, RunConfig
from tl.errors import ConfigError

from conftest import REPO


def test_defaults_are_valid_and_round_trip_through_json():
    cfg = RunConfig()
    assert cfg.backbone == "efficientnet_lite0"
    again = RunConfig.from_json(cfg.to_json())
    assert again == cfg
    assert json.loads(cfg.to_json())["tags"] == []


def test_tags_from_json_lists_become_tuples():
    cfg = RunConfig.from_dict({"tags": ["sweep:1", "x"]})
    assert cfg.tags == ("sweep:1", "x")
    assert hash(cfg)


@pytest.mark.parametrize("field, value", [
    ("strategy", "finetune"), ("backbone", "resnet18"), ("head", "mlp"),
    ("dataset", "imagenet"), ("optimizer", "adamw"), ("class_weight", "auto"),
])
def test_unknown_names_name_the_field_value_and_options(field, value):
    with pytest.raises(ConfigError) as info:
        RunConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(f"Expected `{field}` to be one of [")
    assert message.endswith(f"Received: {field}={value!r}.")


@pytest.mark.parametrize("changes, fragment", [
    ({"image_size": 0}, "Expected `image_size` to be at least 32 and at most 1024. Received: image_size=0."),
    ({"backbone": "inception_v3", "image_size": 74}, "`image_size` to be at least 75"),
    ({"epochs": 0}, "Received: epochs=0."),
    ({"batch_size": "32"}, "Expected `batch_size` to be an integer"),
    ({"learning_rate": 0}, "Expected `learning_rate` to be in (0.0, 10.0]"),
    ({"learning_rate": float("nan")}, "Expected `learning_rate` to be a number"),
    ({"dropout": 1.0}, "Expected `dropout` to be in [0.0, 1.0)"),
    ({"val_fraction": 0.5, "test_fraction": 0.4}, "at least 20% of the images"),
    ({"augment": "yes"}, "Expected `augment` to be true or false"),
    ({"dataset": "folder"}, "set `data_dir`"),
    ({"backbone": "perceptron", "weights": "none", "strategy": "earlier_layer"}, "no earlier layer"),
    ({"backbone": "small_cnn"}, "has no ImageNet weights; use weights='none'"),
    ({"weights": "/no/such/file.h5"}, "Weights file '/no/such/file.h5' does not exist"),
    ({"weights": "run:"}, "run:<id>"),
])
def test_bad_values_raise_one_clear_sentence(changes, fragment):
    with pytest.raises(ConfigError) as info:
        RunConfig(**changes)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_fields_are_refused():
    with pytest.raises(ConfigError, match="Unknown config field"):
        RunConfig.from_dict({"epochz": 3})


def test_invalid_json_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{nope")


def test_scratch_ignores_imagenet_for_a_baseline():
    assert RunConfig(backbone="small_cnn", strategy="scratch").weights == "imagenet"


def test_fine_tune_learning_rate_defaults_to_ten_times_lower():
    assert RunConfig(learning_rate=0.01).effective_fine_tune_learning_rate == pytest.approx(0.001)
    assert RunConfig(fine_tune_learning_rate=0.005).effective_fine_tune_learning_rate == 0.005


def test_typed_epochs_turn_the_step_floor_off_unless_it_is_typed_too():
    from tl.strategies import STRATEGIES

    scratch = dict(strategy="scratch", weights="none")
    floor = STRATEGIES["scratch"].defaults["min_steps"]
    assert floor > 0 and RunConfig(**scratch).resolved().min_steps == floor  # the defaults keep it
    assert RunConfig(**scratch, epochs=2).resolved().min_steps == 0
    assert RunConfig(**scratch, epochs=2, min_steps=50).resolved().min_steps == 50
    assert RunConfig(**scratch, min_steps=50).resolved().epochs == STRATEGIES["scratch"].defaults["epochs"]
    # fine_tune_epochs does not apply to feature_extraction, so typing it keeps the head's floor
    assert RunConfig(fine_tune_epochs=3).resolved().min_steps == STRATEGIES["feature_extraction"].defaults["min_steps"]


def test_fine_tunes_floor_follows_its_second_phases_epochs(monkeypatch):
    from tl.strategies import STRATEGIES

    monkeypatch.setitem(STRATEGIES["fine_tune"].defaults, "min_steps", 100)  # its own default is 0
    assert RunConfig(strategy="fine_tune", fine_tune_epochs=3).resolved().min_steps == 0
    assert RunConfig(strategy="fine_tune", epochs=3).resolved().min_steps == 100  # the head phase's epochs


def test_a_config_written_before_the_rule_replays_and_a_resolved_one_replays_unchanged():
    old = RunConfig.from_dict({"strategy": "scratch", "weights": "none", "epochs": 5})  # no min_steps
    assert old.min_steps is None and old.resolved().min_steps == 0
    for cfg in (old, RunConfig(strategy="scratch", weights="none")):
        saved = json.loads(cfg.resolved().to_json())  # what config.json holds
        assert saved["min_steps"] is not None
        assert RunConfig.from_dict(saved).resolved() == cfg.resolved()


def test_importing_tl_and_its_registries_does_not_import_tensorflow():
    code = ("import sys, tl, tl.config, tl.backbones, tl.heads, tl.strategies, tl.datasets, "
            "tl.runs, tl.training, tl.cli; tl.config.RunConfig(); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'streamlit')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_field_has_one_line_of_help():
    assert list(FIELD_HELP) == [f.name for f in dataclasses.fields(RunConfig)]
    for name, text in FIELD_HELP.items():
        assert text.strip() and "\n" not in text and text.endswith("."), name


def test_optimizers_stay_a_sequence_of_names_each_described():
    assert OPTIMIZERS == ("adam", "sgd", "rmsprop") and list(OPTIMIZERS) == list(OPTIMIZER_DESCRIPTIONS)
    assert all(OPTIMIZER_DESCRIPTIONS[name].strip() for name in OPTIMIZERS)
    assert RunConfig(optimizer="rmsprop").optimizer == "rmsprop"


def test_readme_states_the_upload_limit_streamlit_is_configured_with():
    limit = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    readme = (REPO / "README.md").read_text()
    stated = re.findall(r"(\d+) MB upload limit", readme) + re.findall(r"upload limit is set to (\d+) MB", readme)
    assert stated and set(stated) == {str(limit)}, stated
