"""Updating a run: the same settings trained again on its made dataset's newest version, and
what changed between the two.

:func:`plan` checks that a finished run can be updated (it trained on a made dataset that
still exists and has a newer version) and gives the new run's config: the run's own, tagged
``updates:<run id>`` (its sweep and earlier ``updates:`` tags dropped). :func:`start` hands
it to a ``submit`` callable (the app's :meth:`tl.jobs.JobManager.submit`, or
:func:`tl.training.prepare`), so this module never imports the training it starts.

While the new run trains, :mod:`tl.training` records in its ``metrics.json`` the answer for
each test photo (:func:`test_answers`: runs on made datasets) and, for an update, the
comparison with the run it updates (:func:`comparison`): photos added and removed per class,
the dataset version before and after, and test accuracy and the share of photos called
"none of my classes" on the test photos both runs share (the same content hash in both test
splits, which the stable split of :func:`tl.data.core.stratified_split` makes most of them),
counting only the classes both runs have. :func:`card_line` says it in one sentence.
"""

from dataclasses import replace

import numpy as np

from tl.errors import UserError

TAG = "updates:"


def updated_run_id(cfg) -> str | None:
    """The id of the run that a config's run updates (its ``updates:`` tag), or ``None``."""
    return next((tag[len(TAG):] for tag in cfg.tags if tag.startswith(TAG)), None)


def plan(run, runs_dir=None) -> tuple:
    """``(config, data)`` of the run that updates ``run``: its settings on its made dataset's
    newest version (the data already loaded, split as the new run will split it).

    Raises:
        UserError: the run is damaged or not finished, did not train on a made dataset, or
            its dataset is gone, was replaced, or has not changed since; one sentence each.
    """
    from tl import datasets
    from tl.data import made

    problem = run.damage()
    if problem:
        raise UserError(problem)
    status = run.status().get("status")
    if status != "done":
        raise UserError(f"Run {run.id} is {status}; only a finished run can be updated.")
    origin = run.data_origin
    if not origin or origin.get("kind") != "made":
        raise UserError(f"Run {run.id} did not train on a dataset made in the app, so there is no newer "
                        "version to update it with; train a new run instead.")
    dataset = next((d for d in made.list_datasets(runs_dir) if d.id == origin.get("id")), None)
    if dataset is None:
        raise UserError(f"The dataset '{origin.get('name')}' that run {run.id} trained on has been deleted, so "
                        "the run cannot be updated.")
    if dataset.version <= origin.get("version", 0):
        raise UserError(f"'{dataset.name}' has not changed since run {run.id} trained on it (version "
                        f"{dataset.version}); add photos to it first.")
    old = run.config
    tags = tuple(t for t in old.tags if not t.startswith((TAG, "sweep:"))) + (TAG + run.id,)
    cfg = replace(old, dataset=dataset.ref, tags=tags)
    return cfg, datasets.load(cfg, runs_dir)


def start(run, submit, runs_dir=None):
    """Queue the run that updates ``run`` through ``submit(cfg, data=data)`` and return it.

    Raises:
        UserError: as :func:`plan`, or as ``submit`` (a run that would not fit, ...).
    """
    cfg, data = plan(run, runs_dir)
    return submit(cfg, data=data)


def test_answers(data, probs, unknown=None) -> dict:
    """Each test photo's answer, for later comparisons: its content hash, true and
    predicted class names and whether the run's rule called it unknown (``None``: no rule)."""
    test = data.splits["test"]
    return {
        "hashes": [data.content_hashes[i] for i in test],
        "labels": [data.class_names[data.labels[i]] for i in test],
        "predicted": [data.class_names[int(j)] for j in np.asarray(probs).argmax(axis=1)],
        "unknown": None if unknown is None else [bool(u) for u in unknown],
    }


def recorded(cfg, data, probs, unknown, split_record: dict, runs_dir=None) -> dict:
    """What a run on a made dataset adds to its ``metrics.json``: ``test_answers``, and for an
    update ``update`` (:func:`comparison`; only ``updates`` and a ``note`` when the run it
    updates is gone). Nothing for other data."""
    from tl import runs

    if data.content_hashes is None or (data.origin or {}).get("kind") != "made":
        return {}
    answers = test_answers(data, probs, unknown)
    found = {"test_answers": answers}
    parent = updated_run_id(cfg)
    if parent:
        try:
            found["update"] = comparison(runs.get(parent, runs_dir), data, answers, split_record)
        except UserError as exc:  # deleted or damaged meanwhile
            found["update"] = {"updates": parent, "note": f"Not compared with run {parent}: {exc}"}
    return found


def _photos_by_class(split_record: dict) -> set:
    """``{(class, content hash)}`` of every photo a run's ``split.json`` names."""
    found = set()
    for split in ("train", "val", "test"):
        keys = split_record.get(split) or []
        hashes = (split_record.get("content_hashes") or {}).get(split) or []
        found |= {(key.split("/", 1)[0], digest) for key, digest in zip(keys, hashes)}
    return found


def _scores(truth: list, predicted: list, unknown) -> dict:
    """Accuracy of ``predicted`` against ``truth`` and the share of ``unknown`` (``None``: no rule)."""
    if not truth:
        return {"test_accuracy": None, "unknown_rate": None}
    return {"test_accuracy": round(float(np.mean([t == p for t, p in zip(truth, predicted)])), 4),
            "unknown_rate": None if unknown is None else round(float(np.mean(unknown)), 4)}


def comparison(before, data, answers: dict, split_record: dict) -> dict:
    """What an update changed, against the run it updates (``before``, a :class:`tl.runs.Run`):
    ``updates`` (its id), ``version_before`` / ``version_after``, ``added`` and ``removed``
    (photos per class), ``classes`` (those both runs have), ``shared_test_photos``, the
    ``before`` and ``after`` scores on them (``test_accuracy``, ``unknown_rate``) and a
    ``note`` when something could not be compared."""
    old_split = before._json("split.json", dict, {})
    old_photos, new_photos = _photos_by_class(old_split), _photos_by_class(split_record)
    names = sorted({name for name, _ in old_photos | new_photos})
    added = {name: n for name in names if (n := sum(1 for c, _ in new_photos - old_photos if c == name))}
    removed = {name: n for name in names if (n := sum(1 for c, _ in old_photos - new_photos if c == name))}
    record = {"updates": before.id, "version_before": (old_split.get("origin") or {}).get("version"),
              "version_after": (data.origin or {}).get("version"), "added": added, "removed": removed,
              "classes": [], "shared_test_photos": 0, "before": _scores([], [], None), "after": _scores([], [], None),
              "note": None}
    old_answers = before.metrics.get("test_answers") if isinstance(before.metrics, dict) else None
    if not isinstance(old_answers, dict) or not old_answers.get("hashes"):
        record["note"] = (f"Run {before.id} recorded no answer per test photo (it trained before updates were "
                          "compared), so only the photos added are compared.")
        return record
    classes = sorted(set(before.labels) & set(data.class_names))
    old_index = {digest: j for j, digest in enumerate(old_answers["hashes"])}
    pairs = [(i, old_index[digest]) for i, (digest, label) in enumerate(zip(answers["hashes"], answers["labels"]))
             if digest in old_index and label in classes and old_answers["labels"][old_index[digest]] in classes]
    truth = [answers["labels"][i] for i, _ in pairs]  # the newest class (a photo may have moved)

    def unknown_of(which, rows):
        return None if which.get("unknown") is None else [which["unknown"][r] for r in rows]

    mine, theirs = [i for i, _ in pairs], [j for _, j in pairs]
    record.update(classes=classes, shared_test_photos=len(pairs),
                  after=_scores(truth, [answers["predicted"][i] for i in mine], unknown_of(answers, mine)),
                  before=_scores(truth, [old_answers["predicted"][j] for j in theirs], unknown_of(old_answers, theirs)))
    if not pairs:
        record["note"] = "The two runs share no test photo of a class both have, so their scores are not compared."
    return record


def card_line(metrics: dict) -> str | None:
    """One sentence for a model card naming the run this one updates and what changed, or
    ``None`` when the run updates none."""
    record = metrics.get("update") if isinstance(metrics, dict) else None
    if not isinstance(record, dict) or not record.get("updates"):
        return None
    added = sum(record.get("added", {}).values())
    text = (f"This model updates run {record['updates']}: dataset version {record.get('version_before')} -> "
            f"{record.get('version_after')}, {added} photo(s) added")
    before, after = record.get("before") or {}, record.get("after") or {}
    if record.get("shared_test_photos") and before.get("test_accuracy") is not None:
        text += (f"; on the {record['shared_test_photos']} test photos both runs share, test accuracy "
                 f"{before['test_accuracy']:.0%} -> {after['test_accuracy']:.0%}")
    return text + "."
