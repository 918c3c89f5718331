"""The :class:`Learner`: one run's model, data pipelines, progress events and best checkpoint,
and the phases the strategies drive it through (freezing, fitting on images or on cached
features, the exact head fit), its test metrics and its saved model; with the optimizers it
compiles with (:func:`make_optimizer`) and the epoch limits (:data:`MAX_EPOCHS`,
:data:`MIN_DELTA`).

(Longer than the other modules: the Learner's phases share one model, one data split, one
best checkpoint and one event stream, so they stay one class; where the backbone starts is
:mod:`tl.weights`, the history :mod:`tl.history`, the exact head fit :mod:`tl.head_fit`, the
test metrics :mod:`tl.metrics`.) :mod:`tl.training` creates it for each run; this module
never imports that one.
"""

import numpy as np

from tl import calibration, cluster, datasets, runs
from tl.backbones import cut_layer, set_trainable_top
from tl.errors import ConfigError
from tl.history import ExactFitRecorder
from tl.metrics import classification_report
from tl.paths import cache_root
from tl.strategies import STRATEGIES
from tl.weights import initial_weights, transfer_backbone

MAX_EPOCHS = 1000
MIN_DELTA = 1e-4  # a lower validation loss by less than this is not an improvement


class Learner:
    """Owns one run's model, data pipelines, progress events and best checkpoint.

    Strategies drive it with :meth:`freeze_backbone`, :meth:`unfreeze_top`, :meth:`fit`
    and :meth:`fit_head_on_features`.
    """

    def __init__(self, cfg, run, data, device, runs_dir, emit):
        self.cfg, self.run, self.data, self.emit = cfg, run, data, emit
        self.device, self.runs_dir = device, runs_dir
        self.spec = STRATEGIES[cfg.strategy]
        self.history = run.history
        self.epochs_done = len(self.history)
        self.images_seen = 0
        self.trainable_params = None  # of the last phase
        self.train_seconds = 0.0
        self.extract_seconds = 0.0
        self.feature_cache = None
        self.features_reused = None  # items whose features came from the cache
        self.engine_choice = None  # tl.engine.Choice of the frozen-backbone pass, once features are needed
        self._store = None
        self.best = None  # the lowest validation loss so far
        self.best_epoch = None
        self.fit_reports = []  # one per phase: how it ended (tl.callbacks.Progress.report)
        self.class_weights = None
        self.temperature = None  # set by tl.trust after training; folded into the saved model
        self.raw_test_probs = None
        self._feature_model = None  # the model's pooled-feature part, once asked for (tl.trust)
        if cfg.class_weight == "balanced":
            self.class_weights = datasets.balanced_class_weights(
                data.labels[data.splits["train"]], data.num_classes)
        self._build()
        self._pipelines = {}

    # building
    def _build(self):
        from tl.models import build

        cfg = self.cfg
        self.cut = cut_layer(cfg.backbone, self.spec.cut)
        weights, self.weights_id = initial_weights(cfg, self.runs_dir)
        source = weights if isinstance(weights, runs.Run) else None
        self.model = build(cfg, self.data.num_classes, weights=None if source else weights)
        self.backbone = self.model.get_layer("backbone")
        self.head = self.model.get_layer("head")
        if source:
            copied = transfer_backbone(source, self.backbone)
            self.emit("log", message=f"Backbone weights taken from run {source.id} ({copied} layers).")
        self.emit("model", total_params=self.model.count_params(), weights=self.weights_id,
                  cut=self.cut or "last", backbone_layers=len(self.backbone.layers))

    # freezing
    def freeze_backbone(self):
        """Freeze every backbone layer (BatchNorm then runs in inference mode)."""
        self.backbone.trainable = False

    def unfreeze_top(self, count: int | None, batchnorm: bool = False):
        """Make the last ``count`` weighted non-BatchNorm backbone layers trainable
        (``None``: all of them). With ``batchnorm``, BatchNorm layers train too."""
        self._best_as_whole_model()
        chosen = set_trainable_top(self.backbone, count, batchnorm)
        if count is not None and count > len(chosen):
            self.emit("log", message=f"fine_tune_layers={count} is more than the backbone's "
                                     f"{len(chosen)} weighted layers; all of them are trainable.")

    def set_batchnorm_momentum(self, momentum: float):
        """Momentum of the backbone's BatchNorm moving statistics (for training from scratch)."""
        import keras

        for layer in self.backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = momentum

    # fitting
    def fit(self, phase: str, epochs: int, learning_rate: float, budget: dict | None = None):
        """Compile the whole model and fit it on images for ``epochs`` epochs (more when
        that is fewer than ``min_steps`` optimiser steps). ``budget`` overrides the config's
        ``min_steps`` and ``early_stopping`` for this phase."""
        budget = self._budget(budget)
        train, val = self._image_pipelines()
        self._fit(self.model, phase, self._epochs_for(epochs, len(self.data.splits["train"]), budget["min_steps"]),
                  learning_rate, train, val, budget["early_stopping"])

    def _budget(self, budget: dict | None) -> dict:
        cfg = self.cfg
        return dict({"epochs": cfg.epochs, "learning_rate": cfg.learning_rate, "min_steps": cfg.min_steps,
                     "early_stopping": cfg.early_stopping}, **(budget or {}))

    def _epochs_for(self, epochs: int, train_size: int, min_steps: int) -> int:
        """``epochs``, raised so that they hold at least ``min_steps`` optimiser steps."""
        steps = max(1, -(-train_size // self.cfg.batch_size))
        needed = -(-(min_steps or 0) // steps)
        if needed > epochs:
            self.emit("log", message=f"{epochs} epoch(s) of {steps} step(s) are fewer than min_steps="
                                     f"{min_steps}: training up to {min(needed, MAX_EPOCHS)} epochs.")
        return min(max(epochs, needed), MAX_EPOCHS)

    def warm_start_head(self):
        """Before an image-trained phase: fit the head on the frozen backbone's cached pooled
        features when it reads pooled features (with the head budget of the feature
        strategies, whatever this strategy's image epochs); a Flatten head, which needs the
        spatial map, trains on images for the strategy's epochs at the head's learning rate."""
        from tl.strategies import STRATEGIES, head_on_features

        budget = STRATEGIES["feature_extraction"].defaults
        if head_on_features(self.cfg.strategy, self.cfg.head):
            self.fit_head_on_features(budget)
        else:
            self.fit("head", self.cfg.epochs, budget["learning_rate"], {"min_steps": 0})

    def fit_head_on_features(self, budget: dict | None = None):
        """Fit the head alone on the (cached) pooled features of the frozen backbone.

        The features are standardised with the training split's statistics (stored in the
        head's ``standardize`` layer). A linear head is fitted exactly (L-BFGS, see
        :mod:`tl.head_fit`); others take Adam steps on the in-memory features, for at least
        ``min_steps`` steps, with early stopping on validation loss.
        """
        from tl.head_fit import Matrix
        from tl.heads import set_standardization
        from tl.strategies import fitted_exactly

        self.freeze_backbone()
        store = self._features()
        splits = self.data.splits
        train, val = Matrix(store, splits["train"]), Matrix(store, splits["val"])
        mean, variance = train.own_statistics()
        set_standardization(self.head, mean, variance)
        if fitted_exactly(self.cfg.strategy, self.cfg.head):
            train.use_statistics(mean, variance)
            val.use_statistics(mean, variance)
            self._fit_exactly(train, val)
        else:
            self._fit_head_steps(store, self._budget(budget))

    def _fit_exactly(self, train, val):
        from tl.head_fit import fit_softmax
        from tl.models import count_params

        labels = self.data.labels
        splits = self.data.splits
        weights = None if self.class_weights is None else self.class_weights[labels[splits["train"]]]
        self.trainable_params = count_params(self.head.trainable_weights)
        self.emit("phase", phase="head", method="exact", epochs=None, learning_rate=None,
                  trainable_params=self.trainable_params, first_epoch=self.epochs_done + 1)
        recorder = ExactFitRecorder(self, "head")
        fit = fit_softmax(train, labels[splits["train"]], self.data.num_classes, val=val,
                          val_labels=labels[splits["val"]], sample_weight=weights,
                          on_iteration=recorder.iterated, on_report=recorder.add)
        recorder.flush()
        predictions = self.head.get_layer("predictions")
        predictions.set_weights([fit.kernel, fit.bias])
        report = {
            "phase": "head", "method": "exact", "iterations": fit.iterations, "converged": fit.converged,
            "summary": (f"fitted exactly: converged in {fit.iterations} L-BFGS iterations" if fit.converged else
                        f"fitted exactly: stopped after {fit.iterations} L-BFGS iterations without converging "
                        f"({fit.message})"),
        }
        self.fit_reports.append(report)
        last = fit.history[-1] if fit.history else {"val_accuracy": None, "val_loss": None}
        if last["val_loss"] is not None:  # the fit's optimum is the head phase's best (it comes first)
            self.note_epoch(self.head, last["val_accuracy"], last["val_loss"])
        self.emit("log", message=f"Head {report['summary']}.")

    def _fit_head_steps(self, store, budget):
        import tensorflow as tf

        from tl.features import feature_pipeline
        from tl.head_fit import IN_MEMORY_BYTES

        cfg, data = self.cfg, self.data
        splits, labels = data.splits, data.labels
        size = len(splits["train"]) * store.dim * 4
        if size <= IN_MEMORY_BYTES:  # one matrix in memory: no per-row reads while fitting
            def pipeline(rows, shuffle=False):
                x = store.read(rows).reshape(-1, 1, 1, store.dim)
                parts = (x, labels[rows].astype(np.int32))
                if self.class_weights is not None and shuffle:
                    parts += (self.class_weights[labels[rows]],)
                ds = tf.data.Dataset.from_tensor_slices(parts)
                if shuffle:
                    ds = ds.shuffle(len(rows), seed=cfg.seed, reshuffle_each_iteration=True)
                return ds.batch(cfg.batch_size).prefetch(tf.data.AUTOTUNE)

            train, val = pipeline(splits["train"], shuffle=True), pipeline(splits["val"])
        else:  # streamed from the memory-mapped cache, batch by batch
            train = feature_pipeline(store, splits["train"], labels[splits["train"]], cfg.batch_size,
                                     shuffle=True, seed=cfg.seed, class_weights=self.class_weights)
            val = feature_pipeline(store, splits["val"], labels[splits["val"]], cfg.batch_size)
        epochs = self._epochs_for(budget["epochs"], len(splits["train"]), budget["min_steps"])
        head = self._features_head()
        self._fit(head, "head", epochs, budget["learning_rate"], train, val, budget["early_stopping"])
        if head is not self.head:  # the copy's best epoch goes into the run's own head
            if self.best is not None and self.best_weights[0] is head:
                head.set_weights(self.best_weights[1])
            _copy_weights(head, self.head)
            self.best_weights = (self.head, self.head.get_weights())

    def _features_head(self):
        """The head as it reads pooled features: the run's own head, or for a strategy whose
        head reads the feature map a copy built for ``(1, 1, C)`` (same layers and weights)."""
        from tl.heads import build_head

        if self.spec.uses_features:
            return self.head
        channels = self.head.input.shape[-1]
        copy = build_head(self.cfg.head, (1, 1, channels), self.data.num_classes, self.cfg.dropout, standardize=True)
        _copy_weights(self.head, copy)
        return copy

    def _fit(self, model, phase, epochs, learning_rate, train, val, patience):
        import keras

        from tl.callbacks import Progress
        from tl.models import count_params

        cluster.take_chiefs_weights(model)  # in a cluster, every worker starts the phase from the chief's weights
        # Compiled afresh each phase: trainable flags only take effect on compile.
        model.compile(optimizer=make_optimizer(self.cfg.optimizer, learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
        self.trainable_params = count_params(model.trainable_weights)
        self.emit("phase", phase=phase, method="steps", epochs=epochs, learning_rate=learning_rate,
                  trainable_params=self.trainable_params, first_epoch=self.epochs_done + 1)
        progress = Progress(self, model, phase, learning_rate, patience)
        model.fit(train, validation_data=val, epochs=self.epochs_done + epochs,
                  initial_epoch=self.epochs_done, callbacks=[progress], shuffle=False, verbose=0)
        self.fit_reports.append(progress.report(epochs))

    def _image_pipelines(self):
        if "images" not in self._pipelines:
            cfg, data = self.cfg, self.data
            train = datasets.image_pipeline(
                data, data.splits["train"], cfg.batch_size, image_size=cfg.image_size, shuffle=True,
                seed=cfg.seed, augment=cfg.augment, class_weights=self.class_weights)
            val = datasets.image_pipeline(data, data.splits["val"], cfg.batch_size, image_size=cfg.image_size)
            self._pipelines["images"] = (train, val)
        return self._pipelines["images"]

    # cached features
    def _features(self):
        """The cached features of every item (extracted on the first call, or a cache hit)."""
        from tl import features
        from tl.models import feature_extractor

        if self._store is None:
            cfg = self.cfg
            found = features.features_of(
                self.data, lambda: feature_extractor(self.model), root=cache_root(self.runs_dir),
                backbone=cfg.backbone, weights=self.weights_id, cut=self.cut, image_size=cfg.image_size,
                batch_size=cfg.batch_size, emit=self.emit, engine=cfg.engine, precision=cfg.engine_precision,
                should_stop=self.run.cancel_requested)
            self._store, self.feature_cache, self.engine_choice = found.store, found.cache, found.choice
            self.extract_seconds, self.features_reused = found.seconds, found.reused
        return self._store

    # best checkpoint
    def note_epoch(self, model, val_accuracy, val_loss) -> bool:
        """Keep the weights of the epoch with the lowest validation loss so far (of
        ``model``, the part that is training).

        They are kept in memory and restored before evaluation, so model.keras holds the
        best epoch, not the last.
        """
        if self.best is not None and val_loss > self.best - MIN_DELTA:
            return False
        self.best, self.best_epoch = val_loss, self.epochs_done
        self.best_weights = (model, model.get_weights())
        return True

    def _best_as_whole_model(self):
        """Before the backbone starts to change, turn a best checkpoint of the head alone
        into one of the whole model (the head's best weights on today's backbone)."""
        if self.best is None or self.best_weights[0] is self.model:
            return
        part, best = self.best_weights
        current = part.get_weights()
        part.set_weights(best)
        self.best_weights = (self.model, self.model.get_weights())
        part.set_weights(current)

    def restore_best(self):
        from tl.heads import refresh_standardization

        if self.best is not None:
            model, weights = self.best_weights
            model.set_weights(weights)
            refresh_standardization(self.head)
        cluster.take_chiefs_weights(self.model)  # each worker tests its share of the chief's model

    # results
    def evaluate(self) -> dict:
        """Test-split metrics: accuracy, loss, confusion matrix, per-class, misclassified."""
        data = self.data
        test = data.splits["test"]
        feature_accuracy = None
        probs = self.probs(test)
        if self.spec.uses_features and self.engine_choice.precision != "fp32":
            # Features of another precision than the served model's: score what is served.
            feature_accuracy = classification_report(probs, data.labels[test], data.class_names)["test_accuracy"]
            probs = self._served_probs(test)
        self.raw_test_probs = probs  # before the temperature (tl.trust records both)
        probs = calibration.scale(probs, self.temperature or 1.0)
        results = classification_report(probs, data.labels[test], data.class_names)
        results["misclassified"] = [
            dict(item, item=int(test[item["index"]]), key=data.keys[test[item["index"]]])
            for item in results["misclassified"]
        ]
        val_accs = [h["val_accuracy"] for h in self.history if h.get("val_accuracy") is not None]
        # An exact fit records a few of its L-BFGS iterations; it ran up to the last one recorded.
        exact = [h.get("iteration") or 1 for h in self.history if h.get("method") == "exact"]
        epochs_run = len(self.history) - len(exact) + (max(exact) if exact else 0)
        results.update(
            train_seconds=round(self.train_seconds, 3),
            extract_seconds=round(self.extract_seconds, 3),
            feature_cache=self.feature_cache,
            features_reused=self.features_reused,
            images_per_second=round(self.images_seen / self.train_seconds, 2) if self.train_seconds else None,
            epochs_run=epochs_run,
            best_val_accuracy=max(val_accs) if val_accs else None,
            best_epoch=self.best_epoch,
            convergence=self.fit_reports,
            trainable_params=self.trainable_params,
            total_params=int(self.model.count_params()),
            train_size=len(data.splits["train"]), val_size=len(data.splits["val"]), test_size=len(test),
            device=self.device, weights=self.weights_id,
            train_precision=self.device.get("train_precision"),
            **(self.engine_choice.as_record() if self.engine_choice else {"engine": None, "engine_precision": None}),
        )
        if feature_accuracy is not None:
            results["feature_test_accuracy"] = feature_accuracy
        return results

    def probs(self, rows) -> np.ndarray:
        """The model's probabilities (before any temperature) on items ``rows``: the head on
        the cached features for a strategy that trains on them (eagerly, in chunks), else the
        whole model on the images."""
        if not self.spec.uses_features:
            return self._served_probs(rows)
        return np.concatenate([np.asarray(self.head(self.cached_features(rows[i:i + 4096])[:, None, None, :],
                                                    training=False))
                               for i in range(0, len(rows), 4096)] or [np.zeros((0, self.data.num_classes))])

    def cached_features(self, rows) -> np.ndarray:
        """``(len(rows), C)`` pooled features of the frozen backbone, from the cache."""
        return self._features().read(rows)

    def model_features(self, rows) -> np.ndarray:
        """``(len(rows), C)`` pooled features of the model as trained (its backbone's output)."""
        from tl.models import feature_extractor

        cfg = self.cfg
        if self._feature_model is None:  # built (and traced) once for the bank, validation and test passes
            self._feature_model = feature_extractor(self.model)
        pooled = self._feature_model.predict(
            datasets.image_pipeline(self.data, rows, cfg.batch_size, image_size=cfg.image_size), verbose=0)
        return np.asarray(pooled).reshape(len(rows), -1)

    def _served_probs(self, rows):
        """Probabilities of the whole model (what model.keras serves) on images ``rows``."""
        cfg = self.cfg
        return self.model.predict(
            datasets.image_pipeline(self.data, rows, cfg.batch_size, image_size=cfg.image_size), verbose=0)

    def save_model(self):
        """Save the full model (images in, probabilities out) atomically as model.keras, with
        the calibration's temperature folded into its last layer.

        Optimizer state would double or triple the file for nothing a user of the exported
        model needs, so a model that was compiled (it or its head) is saved as an
        uncompiled clone; one fitted without an optimizer (an exact head) is saved as it is.
        """
        import keras

        from tl.heads import refresh_standardization

        export = self.model
        if self.model.compiled or self.head.compiled:
            export = keras.Model.from_config(self.model.get_config())
            export.set_weights(self.model.get_weights())
            refresh_standardization(export.get_layer("head"))
        if self.temperature is not None:  # every probability the saved model gives is the calibrated one
            calibration.fold_temperature(export.get_layer("head").get_layer("predictions"), self.temperature)
        tmp = self.run.path / ".model.tmp.keras"
        try:
            export.save(tmp)
            tmp.replace(self.run.model_path)
        finally:  # a disk that fills up mid-save leaves no partial file behind
            tmp.unlink(missing_ok=True)


# -- optimizers ---------------------------------------------------------------------

def make_optimizer(name: str, learning_rate: float):
    """Build optimizer ``name`` ("adam", "sgd" with momentum 0.9, "rmsprop")."""
    import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    raise ConfigError(f"Expected `optimizer` to be one of ['adam', 'rmsprop', 'sgd']. Received: optimizer={name!r}.")


def _copy_weights(source, target) -> None:
    """Copy weights layer by layer, by name, between two heads of the same architecture."""
    from tl.heads import refresh_standardization

    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    refresh_standardization(target)
