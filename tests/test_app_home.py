import subprocess
import sys

from streamlit.testing.v1 import AppTest

from tl.advisor import LARGE_PER_CLASS, recommend

from conftest import REPO

APP = str(REPO / "streamlit_app.py")


def test_home_renders_the_advisor_and_the_device():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Transfer Learning Studio"
    assert any("Training will run on:" in c.value for c in at.caption)
    assert "strategy **feature_extraction**" in at.info[0].value  # 200 per class, photos


def test_advisor_follows_the_inputs_and_opens_train_prefilled(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.number_input(key="advisor_images").set_value(5000)
    at.radio(key="advisor_similar").set_value(at.radio(key="advisor_similar").options[1])
    at.run()
    assert "Large data, different from ImageNet" in at.info[0].value
    assert "strategy **full_fine_tune**" in at.info[0].value
    at.button(key="advisor_open").click().run()
    assert not at.exception
    assert at.title[0].value == "Train"
    assert at.selectbox(key="train_strategy").value == "full_fine_tune"


def test_a_backbone_without_pretrained_weights_is_advised_scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("TL_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.selectbox(key="advisor_backbone").value == "efficientnet_lite0"
    at.selectbox(key="advisor_backbone").set_value("small_cnn").run()
    advice = at.info[0].value
    assert "strategy **scratch**" in advice and "Transfer is not possible: small_cnn has no pretrained" in advice
    assert "ImageNet features already" not in advice
    at.button(key="advisor_open").click().run()
    assert not at.exception
    assert at.selectbox(key="train_backbone").value == "small_cnn"
    assert at.selectbox(key="train_strategy").value == "scratch"


def test_advisor_table():
    assert recommend(10, True).strategy == "feature_extraction"
    assert recommend(10, False).strategy == "earlier_layer"
    assert recommend(LARGE_PER_CLASS, True).strategy == "fine_tune"
    assert recommend(LARGE_PER_CLASS, False).strategy == "full_fine_tune"


def test_the_home_page_does_not_import_tensorflow():
    code = ("import sys\nfrom streamlit.testing.v1 import AppTest\n"
            f"at = AppTest.from_file({APP!r}, default_timeout=60).run()\n"
            "assert not at.exception, at.exception\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'openvino'))\n"
            "print(loaded[:5]); sys.exit(1 if loaded else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_no_pages_folder_so_deep_links_go_through_the_navigation():
    # A pages/ folder next to the entrypoint puts Streamlit in its old multipage mode until
    # st.navigation first runs: a fresh server then serves /train without this app's navigation.
    assert not (REPO / "pages").exists()
    assert (REPO / "app_pages" / "train.py").is_file()


def test_the_app_keeps_keras_state_between_script_runs(monkeypatch):
    """Streamlit resets Keras after every script run (a full collection and TensorFlow's
    kernel cache emptied, about a second per run of any session once a model is loaded);
    the app's entry point turns that off for its shared models, keeping matplotlib's clean-up."""
    import keras
    from streamlit.runtime.scriptrunner import script_runner

    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    cleared = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: cleared.append(1))
    script_runner._clean_problem_modules()
    assert script_runner._clean_problem_modules.__name__ == "clean_without_keras"
    assert cleared == []
