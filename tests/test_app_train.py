import time

import pytest
from streamlit.testing.v1 import AppTest

from tl import runs

from conftest import REPO
from test_app_export import open_run

APP = str(REPO / "streamlit_app.py")
WAIT_SECONDS = 240


def open_train():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception, at.exception
    return at


def choose_tiny_run(at, epochs=2, samples=20, batch=64):
    at.selectbox(key="train_backbone").set_value("small_cnn")
    at.selectbox(key="train_strategy").set_value("scratch").run()
    at.number_input(key="train_image_size").set_value(16)
    at.number_input(key="train_samples_per_class").set_value(samples)
    at.number_input(key="train_epochs").set_value(epochs)
    at.number_input(key="train_batch_size").set_value(batch)
    at.number_input(key="train_synthetic_classes").set_value(2)
    at.run()
    assert not at.exception, at.exception


def wait_for(root, predicate, what):
    deadline = time.time() + WAIT_SECONDS
    while time.time() < deadline:
        found = runs.list_runs(root)
        if found and predicate(found[0]):
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_train_small_cnn_from_the_page_to_results(runs_root):
    at = open_train()
    choose_tiny_run(at)
    # The smallest step size: the model stays near chance, so the gallery has mistakes.
    at.number_input(key="train_learning_rate").set_value(1e-6).run()
    assert any("Images per class" in str(c.proto.spec) for c in at.get("plotly_chart"))  # preview
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    run = wait_for(runs_root, lambda r: r.status()["status"] in ("done", "failed"), "the run to end")
    assert run.status()["status"] == "done", run.status().get("reason")
    at.run()
    assert not at.exception, at.exception
    assert at.subheader[0].value == f"Run {run.id}"
    labels = [m.label for m in at.metric]
    assert labels[:2] == ["Test accuracy", "Test loss"]
    assert at.metric[0].value == f"{run.metrics['test_accuracy']:.1%}"
    assert len(at.get("plotly_chart")) >= 5  # counts, loss, accuracy, per-class, confusion
    assert len(at.get("download_button")) == 5  # model, config, metrics, labels.txt, model card
    # A backbone trained on too few validation photos is not calibrated, and the results say so.
    assert trust_section(at).markdown[0].value == run.metrics["calibration"]["note"]
    mistakes = run.metrics["misclassified"]
    assert mistakes, "the tiny run should get some test images wrong"
    captions = [c for img in at.get("image") for c in img.captions if "→" in c]
    assert len(captions) == min(24, len(mistakes))
    # Filter the gallery by a true class that has no mistakes.
    right = next(name for name in run.metrics["class_names"] if name not in {m["true"] for m in mistakes}
                 ) if len({m["true"] for m in mistakes}) < 2 else None
    if right:
        at.selectbox(key=f"mis_true_{run.id}").set_value(right).run()
        assert any("No mistakes of that kind." in c.value for c in at.caption)
    # The runs list shows it.
    assert at.dataframe[0].value["run"].tolist() == [run.id]


@pytest.mark.slow
def test_stop_from_a_second_session_keeps_the_history(runs_root):
    first = open_train()
    choose_tiny_run(first, epochs=300, samples=40, batch=8)
    first.button(key="train_start").click().run()
    run = wait_for(runs_root, lambda r: len(r.history) >= 1, "the first epoch")

    second = open_train()  # a new session (another tab) finds the running run
    assert second.subheader[0].value == f"Run {run.id}"
    assert second.get("progress"), "a progress bar while it runs"
    second.button(key="train_stop").click().run()
    run = wait_for(runs_root, lambda r: r.status()["status"] != "running", "the run to stop")
    assert run.status()["status"] == "cancelled"
    kept = len(run.history)
    assert kept >= 1

    first.run()
    assert not first.exception, first.exception
    assert "This run was stopped before it finished: Stopped by the user." in first.warning[0].value
    assert len(first.get("plotly_chart")) >= 2  # the curves so far

    reloaded = AppTest.from_file(APP, default_timeout=60)
    reloaded.query_params["run"] = run.id  # a browser reload keeps ?run=<id>
    reloaded.run()
    reloaded.switch_page("app_pages/train.py").run()
    assert reloaded.subheader[0].value == f"Run {run.id}"


def test_a_missing_folder_is_one_message_not_a_traceback(runs_root):
    at = open_train()
    at.selectbox(key="train_dataset").set_value("folder").run()
    # Nothing chosen yet: a hint on what to do, no red error, and uploads come first.
    assert not at.error and at.radio(key="train_source").value == "zip"
    assert any("Upload your images to continue" in c.value for c in at.caption)
    at.radio(key="train_source").set_value("server").run()
    assert not at.error
    at.text_input(key="train_data_dir").input("/no/such/photos").run()
    assert not at.exception
    assert any("Data folder '/no/such/photos' does not exist" in e.value for e in at.error)
    at.button(key="train_start").click().run()
    assert not at.exception
    assert runs.list_runs(runs_root) == []


def test_delete_a_run_after_confirming(runs_root):
    from conftest import tiny_config

    run = runs.create(tiny_config(), runs_root)
    run.set_status("failed", reason="for the test")
    at = open_train()
    at.selectbox(key="runs_pick").set_value(run.id)
    at.button(key="runs_delete").click().run()
    assert "cannot be undone" in at.warning[-1].value
    assert run.path.exists()
    at.button(key="runs_delete_yes").click().run()
    assert not at.exception
    assert not run.path.exists()


@pytest.mark.slow
def test_the_form_follows_the_run_on_screen_and_offers_to_train_it_again(runs_root):
    from conftest import tiny_config, train_run

    first = train_run(runs_root, tiny_config(strategy="scratch", image_size=24, samples_per_class=10, seed=3))
    second = runs.create(tiny_config(strategy="frozen", backbone="small_cnn", image_size=16), runs_root)
    second.set_status("cancelled", reason="Stopped by the user.")
    at = open_run(first.id)
    assert at.selectbox(key="train_backbone").value == "small_cnn"
    assert at.selectbox(key="train_strategy").value == "scratch"
    assert at.number_input(key="train_image_size").value == 24
    assert at.number_input(key="train_seed").value == 3
    assert at.button(key="train_start").proto.label == "Train again with these settings"
    assert not at.warning  # no "default value and session state" warning from Streamlit either

    # Open another run from the list: the form follows it.
    at.selectbox(key="runs_pick").set_value(second.id)
    at.button(key="runs_open").click().run()
    assert at.selectbox(key="train_strategy").value == "frozen"
    assert at.number_input(key="train_image_size").value == 16
    # Editing a setting keeps the edit (the run on screen did not change) and Train is plain again.
    at.number_input(key="train_image_size").set_value(32).run()
    assert at.number_input(key="train_image_size").value == 32
    assert at.button(key="train_start").proto.label == "Train"


def test_an_unknown_run_in_the_url_is_one_sentence(runs_root):
    at = open_run("20990101-000000-gone-0000")
    assert any("There is no run '20990101-000000-gone-0000'" in w.value for w in at.warning)
    assert "run" not in at.query_params


def test_a_transfer_strategy_on_a_weightless_backbone_is_warned_before_train(runs_root):
    at = open_train()
    at.selectbox(key="train_backbone").set_value("small_cnn")
    at.selectbox(key="train_strategy").set_value("feature_extraction").run()
    warned = [w.value for w in at.warning if "small_cnn has no pretrained weights" in w.value]
    assert warned and "Choose scratch" in warned[0]
    at.selectbox(key="train_strategy").set_value("scratch").run()
    assert not [w for w in at.warning if "pretrained weights" in w.value]


def test_train_while_an_identical_run_is_queued_asks_first(runs_root):
    from tl.config import RunConfig

    at = open_train()
    choose_tiny_run(at)
    at.run()
    # The same settings as the form, queued by another session (status only: no worker).
    twin = runs.create(RunConfig.from_dict({**_form_config(at).to_dict()}), runs_root)
    at.button(key="train_start").click().run()
    assert any(f"Run {twin.id} with exactly these settings is already queued" in w.value for w in at.warning)
    assert [r.id for r in runs.list_runs(runs_root)] == [twin.id]  # nothing queued yet
    at.button(key="train_confirm_no").click().run()
    assert [r.id for r in runs.list_runs(runs_root)] == [twin.id]


PHONE_CHARACTERS = 40  # what a selectbox shows uncut on a 390-pixel phone, about


def test_every_choice_fits_a_phone_and_the_chosen_one_is_described(runs_root):
    from tl.backbones import BACKBONES
    from tl.config import OPTIMIZER_DESCRIPTIONS
    from tl.datasets import DATASETS
    from tl.heads import HEADS
    from tl.strategies import STRATEGIES

    at = open_train()
    at.selectbox(key="train_strategy").set_value("fine_tune").run()  # shows the optimizer too
    assert not at.exception, at.exception
    described = {"train_dataset": {n: d.description for n, d in DATASETS.items()},
                 "train_backbone": {n: b.description for n, b in BACKBONES.items()},
                 "train_strategy": {n: s.description for n, s in STRATEGIES.items()},
                 "train_head": {n: h.description for n, h in HEADS.items()},
                 "train_optimizer": OPTIMIZER_DESCRIPTIONS}
    boxes = {box.key: box for box in at.selectbox}
    assert set(described) | {"train_weights", "train_class_weight"} <= set(boxes)
    for box in boxes.values():
        assert all(len(option) <= PHONE_CHARACTERS for option in box.options), (box.key, box.options)
    captions = [c.value for c in at.caption]
    for key, texts in described.items():
        assert boxes[key].options == list(texts)  # the names themselves
        assert texts[boxes[key].value] in captions, key  # the chosen one's description under it
        assert all(f"- **{name}**: {text}" in boxes[key].help for name, text in texts.items()), key
    at.selectbox(key="train_backbone").set_value("resnet50").run()
    captions = [c.value for c in at.caption]
    assert BACKBONES["resnet50"].description in captions
    assert BACKBONES["efficientnet_lite0"].description not in captions


def _form_config(at):
    from tl.config import RunConfig

    keys = {"dataset", "backbone", "strategy", "head", "image_size", "samples_per_class", "epochs", "batch_size",
            "synthetic_classes"}
    values = {k: at.session_state[f"train_{k}"] for k in keys}
    return RunConfig(weights="none", **values)


def test_the_train_and_compare_pages_render_without_tensorflow(tmp_path):
    """The weights checks on these pages (EfficientNet-Lite's converted files, Keras's
    download folder) find Keras's folder without importing Keras: the first render stays
    TensorFlow-free (it took 2.5 s more when keras_home() imported Keras)."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom streamlit.testing.v1 import AppTest\n"
            f"at = AppTest.from_file({APP!r}, default_timeout=120).run()\n"
            "for page in ('app_pages/train.py', 'app_pages/compare.py'):\n"
            "    at.switch_page(page).run()\n"
            "    assert not at.exception, at.exception\n"
            "    assert at.get('selectbox'), page\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TL_RUNS_DIR": str(tmp_path / "runs")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["False", "False"]


def trust_section(at):
    found = [e for e in at.expander if e.label == "How far to trust its answers"]
    return found[0] if found else None


@pytest.mark.slow
def test_the_results_say_how_far_to_trust_the_runs_answers(tmp_path, monkeypatch, trained_once):
    import json

    from conftest import LITE0_RUN, tiny_config

    root = tmp_path / "runs"
    monkeypatch.setenv("TL_RUNS_DIR", str(root))
    run = trained_once(tiny_config(**LITE0_RUN), root)
    record, rule = run.metrics["calibration"], run.metrics["novelty"]
    at = open_run(run.id)
    section = trust_section(at)
    texts = [m.value for m in section.markdown]
    assert texts[0] == ("Its confidences are calibrated: its scores are divided by a temperature of "
                        f"{record['temperature']:.2f} before the softmax, so that how sure it says it is matches how "
                        "often it is right (the chart below); the saved model and every format built from it below "
                        "include it. " + record["note"])
    assert record["note"].startswith("Fitted on out-of-fold predictions of ")  # the validation split is too small
    assert texts[1] == (f"On the {run.metrics['test_size']} test photos (lower is better): expected calibration error "
                        f"{record['ece_before']:.3f} → {record['ece_after']:.3f}, negative log-likelihood "
                        f"{record['nll_before']:.3f} → {record['nll_after']:.3f}.")
    (chart,) = section.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["layout"]["title"]["text"].startswith("Reliability on the test photos")
    assert [t["name"] for t in spec["data"]] == ["perfectly calibrated", "before calibration", "after calibration"]
    assert f"it flagged {rule['test_unknown_rate']:.0%} of the test photos" in texts[2]
    assert f"below a top probability of {rule['confidence_threshold']:.0%} as none of the classes" in texts[2]

    # A run trained before calibration: one caption, no section, no error.
    metrics = json.loads((run.path / "metrics.json").read_text())
    del metrics["calibration"], metrics["novelty"]
    (run.path / "metrics.json").write_text(json.dumps(metrics))
    at = open_run(run.id)
    assert trust_section(at) is None
    said = [c.value for c in at.caption if c.value.startswith("How far to trust its answers")]
    assert said == ["How far to trust its answers: this run was trained before calibration, so its confidences "
                    "are the model's own and it cannot tell a photo of none of its classes. Train it again to get "
                    "both."]
