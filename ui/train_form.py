"""The Train page's choices: registry selectboxes and hyper-parameters -> a RunConfig."""

import dataclasses

import streamlit as st

from tl import runs
from tl.backbones import BACKBONES, check_installed_weights
from tl.config import OPTIMIZER_DESCRIPTIONS, OPTIMIZERS, STRATEGY_DEFAULTS, RunConfig
from tl.data.catalogue import is_made, made_name
from tl.datasets import spec_of
from tl.errors import UserError
from tl.heads import HEADS
from tl.strategies import STRATEGIES, weights_warning
from ui.state import dataset_choices, image_size_default, restore_form, save_form, widget_default

DEFAULTS = RunConfig()
WEIGHT_CHOICES = {
    "imagenet": "ImageNet (downloads once)",
    "none": "Random (no pretraining)",
    "run": "An earlier run's backbone",
    "file": "A weights file on the server",
}
IMAGENET_INSTALLED = "ImageNet (installed, no download)"


def descriptions(registry) -> dict:
    """name -> description of a registry's entries."""
    return {name: entry.description for name, entry in registry.items()}


def described_choice(container, label: str, choices: dict, key: str, help: str) -> str:
    """A selectbox of the names in ``choices`` (name -> description): names only, so the
    box fits a phone's width; every description in its help, the chosen one's in a caption
    under it. Returns the chosen name."""
    every = "\n".join(f"- **{name}**: {text}" for name, text in choices.items())
    name = container.selectbox(label, list(choices), key=key, help=f"{help}\n\n{every}")
    container.caption(choices[name])
    return name


# The widgets' keys: ``train_<field>`` for each of these config fields.
FIELDS = ("dataset", "backbone", "strategy", "head", "image_size", "samples_per_class", "batch_size",
          "class_weight", "seed", "epochs", "min_steps", "learning_rate", "optimizer", "dropout",
          "early_stopping", "augment", "fine_tune_epochs", "fine_tune_layers", "fine_tune_learning_rate",
          "synthetic_classes")
OTHER_KEYS = ("train_weights", "train_weights_run", "train_weights_file", "train_source", "train_data_dir")
SAVED = "train_saved"  # a copy of the form's values that outlives the widgets (ui.state.restore_form)
FOLLOWED = "train_form_run"  # the run whose settings the form was last set to


def _keys() -> list:
    return [f"train_{f}" for f in FIELDS] + list(OTHER_KEYS)


def follow_run(run) -> None:
    """Set the form to ``run``'s own settings, once each time the run on screen changes (a
    reload, a shared link, Open), so the form always describes the run below it and Train
    trains it again. Fields left to the strategy's default read as auto again."""
    if run is None or st.session_state.get(FOLLOWED) == run.id:
        return
    st.session_state[FOLLOWED] = run.id
    try:
        cfg = run.config
    except UserError:
        return  # a damaged run: the results say why; the form keeps its values
    values = cfg.to_dict()
    defaults = STRATEGIES[cfg.strategy].defaults
    for field in FIELDS:
        value = values.get(field)
        if field in STRATEGY_DEFAULTS and value == defaults.get(field):
            value = None
        st.session_state[f"train_{field}"] = value
    weights = cfg.weights
    if weights.startswith("run:"):
        st.session_state.update(train_weights="run", train_weights_run=weights[4:])
    elif weights in ("imagenet", "none"):
        st.session_state["train_weights"] = weights
    else:
        st.session_state.update(train_weights="file", train_weights_file=weights)
    if cfg.data_dir:
        st.session_state.update(train_source="server", train_data_dir=cfg.data_dir)


def mark_followed(run_id: str) -> None:
    """The form already holds this run's settings (it was just trained from them)."""
    st.session_state[FOLLOWED] = run_id


def _comparable(cfg, fields) -> dict:
    """The values of ``fields`` with the strategy's defaults filled in."""
    values = cfg.resolved().to_dict()
    return {name: values.get(name) for name in fields}


def same_settings(run, cfg) -> bool:
    """Whether ``run`` was (or is being) trained with ``cfg``'s settings: every setting the
    form shows for this strategy and head (one it does not show cannot be told apart)."""
    fields = st.session_state.get("train_form_fields") or [f.name for f in dataclasses.fields(cfg)]
    try:
        return _comparable(run.config, fields) == _comparable(cfg, fields)
    except UserError:
        return False  # damaged: never the same


def twin_of(cfg, root: str) -> str | None:
    """The id of a queued or running run with exactly ``cfg``'s settings, if there is one."""
    for run in runs.list_runs(root):
        if run.status().get("status") in ("queued", "running") and same_settings(run, cfg):
            return run.id
    return None


def settings_line(cfg) -> str:
    """The settings in one line, above the Train button."""
    if cfg.weights == "imagenet":
        weights = "ImageNet weights" + (", installed" if BACKBONES[cfg.backbone].weights_offline else "")
    elif cfg.weights == "none" or not STRATEGIES[cfg.strategy].pretrained:
        weights = "random weights"
    elif cfg.weights.startswith("run:"):
        weights = f"weights of run {cfg.weights[4:]}"
    else:
        weights = "weights from a file"
    data = "your images" if cfg.dataset == "folder" else made_name(cfg.dataset)
    return (f"**{data}** · **{cfg.backbone}** ({weights}) · strategy **{cfg.strategy}** · head **{cfg.head}** · "
            f"{cfg.image_size} px")


def _apply_prefill() -> None:
    """Choices handed over by the home page's advisor become the widgets' values."""
    prefill = st.session_state.pop("train_prefill", None)
    for field, value in (prefill or {}).items():
        st.session_state[f"train_{field}"] = value


def config_form(root: str, run=None):
    """Render the choices (set to ``run``'s settings when the run on screen changed); return
    a validated :class:`RunConfig`, or ``None`` after showing why the choices cannot run."""
    restore_form(SAVED)
    follow_run(run)
    _apply_prefill()
    try:
        return _form(root)
    finally:
        save_form(SAVED, _keys())


def _form(root: str):
    col1, col2 = st.columns(2)
    dataset = described_choice(col1, "Dataset", dataset_choices(st.session_state.get("train_dataset")),
                               "train_dataset", "synthetic works offline; folder reads your own images; data:NAME "
                               "are the ones you made on the Data page; the others download once.")
    spec_ = spec_of(dataset)
    data_dir = None
    if spec_.needs_dir:
        with col1:
            data_dir = data_source()
    if spec_.card:
        with col1.expander("About this dataset"):
            dataset_card(spec_.card)
    if is_made(dataset):
        col1.page_link("app_pages/data.py", label="Edit its photos on the Data page", icon=":material/photo_library:")
    backbone = described_choice(col1, "Backbone", descriptions(BACKBONES), "train_backbone",
                                "The pretrained network. efficientnet_lite0 is fast on a CPU and needs no download.")
    strategy = described_choice(col2, "Strategy", descriptions(STRATEGIES), "train_strategy",
                                "How much of the backbone is trained; the Home page's advisor helps choose.")
    head = described_choice(col2, "Head", descriptions(HEADS), "train_head", "The classifier on top of the backbone.")
    weights = _weights_choice(col2, backbone, strategy, root)
    warning = weights_warning(strategy, backbone, weights)
    if warning:
        col2.warning(warning, icon=":material/warning:")

    spec = STRATEGIES[strategy]
    values = dict(dataset=dataset, data_dir=data_dir or None, backbone=backbone, strategy=strategy,
                  head=head, weights=weights)
    with st.expander("Hyper-parameters", expanded=False):
        values.update(_hyper_parameters(spec, dataset, backbone, head))
    st.session_state["train_form_fields"] = list(values)
    if spec_.needs_dir and not data_dir:
        return None  # data_source() already says what to do next; not an error yet
    try:
        return RunConfig(**values)
    except UserError as exc:
        st.error(str(exc))
        return None


def _weights_choice(col, backbone, strategy, root) -> str:
    if not STRATEGIES[strategy].pretrained:
        col.caption("Weights: random (the scratch strategy starts from random weights).")
        return "none"
    options = list(WEIGHT_CHOICES) if BACKBONES[backbone].pretrained else ["none", "run", "file"]
    if st.session_state.get("train_weights") not in options:
        st.session_state["train_weights"] = options[0]
    offline = BACKBONES[backbone].weights_offline
    kind = col.selectbox("Weights", options, key="train_weights",
                         format_func=lambda k: IMAGENET_INSTALLED if k == "imagenet" and offline else WEIGHT_CHOICES[k],
                         help="Where the backbone starts: ImageNet, random, or your own earlier run.")
    if kind == "imagenet":
        try:
            check_installed_weights(backbone)
        except UserError as exc:
            col.warning(str(exc), icon=":material/warning:")
    if kind == "run":
        done = [row["run_id"] for row in (r.summary() for r in runs.list_runs(root))
                if row["status"] == "done" and row["backbone"] == backbone]
        if not done:
            col.warning(f"No finished {backbone} run yet; train one first.")
            return "run:"
        return "run:" + col.selectbox("Run", done, key="train_weights_run")
    if kind == "file":
        return col.text_input("Weights file (.h5 / .weights.h5)", key="train_weights_file") or "-"
    return kind


def _auto(spec, field: str) -> str:
    """Placeholder of a field left to the strategy: its default."""
    return f"auto: {spec.defaults[field]:g}"


def _hyper_parameters(spec, dataset, backbone, head) -> dict:
    """The hyper-parameters that apply to the strategy and head. Epochs, learning rate,
    early stopping and the step floor start empty: the strategy's default (shown greyed)."""
    from tl.strategies import fitted_exactly, head_on_features

    c1, c2, c3 = st.columns(3)
    min_size = BACKBONES[backbone].min_size
    exact = fitted_exactly(spec.name, head)
    image_size_default("train_image_size", DEFAULTS.image_size, min_size)
    for field in ("samples_per_class", "batch_size", "seed", "fine_tune_layers", "synthetic_classes", "dropout"):
        widget_default(f"train_{field}", getattr(DEFAULTS, field))
    values = {
        "image_size": c1.number_input(
            "Image size (pixels)", min_value=min_size, max_value=1024,
            step=16, key="train_image_size",
            help="Images are resized to this inside the model. 224 is ImageNet's size (best accuracy, slow on a CPU)."),
        "samples_per_class": c1.number_input(
            "Images per class (cap, 0 = all)", min_value=0, step=50,
            key="train_samples_per_class", help="Caps each class to keep CPU runs short; 0 uses everything."),
        "batch_size": c2.number_input(
            "Batch size", min_value=1, max_value=4096, key="train_batch_size",
            help="Images per step; lower it if memory runs out."),
        "class_weight": c3.selectbox(
            "Class weights", ["none", "balanced"], key="train_class_weight",
            help="balanced makes rare classes count as much as common ones (for imbalanced data)."),
        "seed": c3.number_input("Seed", min_value=0, key="train_seed",
                                help="Same seed, same split and same initial weights."),
    }
    if head_on_features(spec.name, head):
        st.caption(("The head is fitted exactly on the frozen backbone's pooled features (cached on disk): a "
                    "logistic regression on standardised features, solved to convergence, so there are no epochs "
                    "or learning rate to choose for it." if exact else
                    "The head is fitted on the frozen backbone's pooled features (cached on disk) by Adam steps on "
                    "standardised features, with early stopping on validation loss.")
                   + ("" if spec.uses_features else " Then the model trains on images as set here."))
    if not (exact and spec.uses_features):
        values.update(_step_parameters(spec, c1, c2, c3))
    if "augment" in spec.applies:
        values["augment"] = c1.checkbox("Augment (flips, small rotations, zooms)", key="train_augment",
                                        help="Helps small datasets generalise; needs training on images.")
    if "fine_tune_epochs" in spec.applies:
        values["fine_tune_epochs"] = c2.number_input(
            "Fine-tune epochs", min_value=0, value=None, placeholder=_auto(spec, "fine_tune_epochs"),
            key="train_fine_tune_epochs", help="Epochs of the second phase, with the top layers unfrozen.")
        values["fine_tune_layers"] = c2.number_input(
            "Layers to unfreeze", min_value=1, key="train_fine_tune_layers",
            help="Weighted layers (conv/dense) counted from the top; BatchNorm stays frozen.")
    if "fine_tune_learning_rate" in spec.applies:
        values["fine_tune_learning_rate"] = c3.number_input(
            "Fine-tune learning rate", min_value=1e-7, max_value=1.0, value=None,
            placeholder=f"auto: {spec.defaults['learning_rate'] / 10:g}", format="%.6f",
            key="train_fine_tune_learning_rate",
            help="Low, so the pretrained weights move a little (10x lower than the learning rate by default).")
    if dataset == "synthetic":
        values["synthetic_classes"] = c1.number_input(
            "Synthetic classes", min_value=2, max_value=10,
            key="train_synthetic_classes", help="How many shapes to tell apart.")
    return {k: (int(v) if isinstance(v, float) and k not in _FLOATS else v) for k, v in values.items()}


def _step_parameters(spec, c1, c2, c3) -> dict:
    """Epochs, learning rate, optimizer, dropout, early stopping and the step floor: for the
    phases trained by gradient steps."""
    return {
        "epochs": c1.number_input(
            "Epochs", min_value=1, max_value=1000, value=None, placeholder=_auto(spec, "epochs"), key="train_epochs",
            help="Passes over the training images (at most, with early stopping); empty: the strategy's default."),
        "min_steps": c1.number_input(
            "At least this many steps", min_value=0, max_value=100_000, value=None,
            placeholder="auto: 0 (Epochs typed)" if st.session_state.get("train_epochs") else _auto(spec, "min_steps"),
            key="train_min_steps",
            help="Small data has few steps per epoch: epochs are added until there are this many optimiser steps. "
                 "Empty: the strategy's floor, or none when you type the Epochs."),
        "learning_rate": c2.number_input(
            "Learning rate", min_value=1e-6, max_value=1.0, value=None, placeholder=_auto(spec, "learning_rate"),
            format="%.5f", key="train_learning_rate", help="Step size; lower it if the loss jumps or becomes NaN."),
        "optimizer": described_choice(c2, "Optimizer", {name: OPTIMIZER_DESCRIPTIONS[name] for name in OPTIMIZERS},
                                      "train_optimizer", "adam is a safe default; sgd uses momentum 0.9."),
        "dropout": c3.slider("Dropout", 0.0, 0.9, step=0.05, key="train_dropout",
                             help="Share of features dropped while training the head; raise it if it overfits."),
        "early_stopping": c3.number_input(
            "Early stopping patience (0 = off)", min_value=0, max_value=1000, value=None,
            placeholder=_auto(spec, "early_stopping"), key="train_early_stopping",
            help="Stop after this many epochs without a lower validation loss; the best epoch's weights are kept."),
    }


_FLOATS = {"learning_rate", "fine_tune_learning_rate", "dropout"}


# -- the user's own images -------------------------------------------------------------

# Uploads first: a newcomer's images are on their own machine, not on the server.
SOURCES = {"zip": "Upload a zip", "upload_dir": "Upload a folder", "server": "A folder on the server"}


def data_source() -> str | None:
    """Where the folder dataset's images come from: an uploaded zip, an uploaded folder or a
    server path. Uploads are ingested (checked, junk skipped, stored once per content) and
    their stored folder is returned; ``None`` until there is one."""
    kind = st.radio("Images", list(SOURCES), key="train_source", format_func=SOURCES.get, horizontal=True,
                    help="A zip or a folder with one sub-folder per class, images inside.")
    if kind == "server":
        path = st.text_input("Data folder on the server", key="train_data_dir", placeholder="/path/to/photos",
                             help="One sub-folder per class, images inside.")
        if not path:
            st.caption("Type the path of a folder with one sub-folder per class to continue.")
        return path
    if kind == "zip":
        uploaded = st.file_uploader("Zip of class folders", type=["zip"], key="train_zip",
                                    help="For example photos.zip holding photos/cats/1.jpg and photos/dogs/2.jpg.")
        files = [uploaded] if uploaded else []
    else:
        files = st.file_uploader("Folder of class folders", accept_multiple_files="directory", key="train_upload_dir",
                                 help="Pick the folder that holds one sub-folder per class.") or []
    if not files:
        st.caption("Upload your images to continue: one folder per class, images inside.")
        return None
    stored = ingest_upload(kind, files)
    return None if stored is None else str(stored.path)


def ingest_upload(kind: str, files):
    """Store an upload once (remembered per upload in the session); show its summary or
    the one-sentence reason it was refused. Returns the :class:`tl.ingest.Ingested` or ``None``."""
    from tl import ingest

    key = (kind,) + tuple(getattr(f, "file_id", f.name) for f in files)
    memo = st.session_state.setdefault("ingested", {})
    if key not in memo:
        try:
            with st.spinner("Checking and storing the images..."):
                if kind == "zip":
                    memo[key] = ingest.ingest_zip(files[0], name=f"'{files[0].name}'")
                else:
                    memo[key] = ingest.ingest_files(files)
        except UserError as exc:
            memo[key] = str(exc)
    stored = memo[key]
    if isinstance(stored, str):
        st.error(stored)
        return None
    st.success(f"{'Already stored' if stored.reused else 'Stored'}: {stored.describe()}")
    st.caption(" · ".join(f"{name}: {n}" for name, n in stored.counts.items()))
    return stored


def dataset_card(card: dict) -> None:
    """Source, license, classes, image counts and citation of a downloadable dataset."""
    st.markdown(f"**{card['title']}** · [source]({card['source']})")
    st.markdown(f"- Classes: {card['classes']}\n- Images: {card['images']}\n- License: {card['license']}")
    st.caption(f"Cite: {card['citation']}")
