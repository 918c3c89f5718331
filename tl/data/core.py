"""Data, the labelled item collection every dataset becomes; the per-class cap, the seeded
stratified split (one that stays put as photos are added, for made datasets) and balanced
class weights."""

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tl.errors import DataError


@dataclass
class Data:
    """A labelled image collection, already capped and split.

    Attributes:
        name: dataset name.
        class_names: one name per class, index = label.
        labels: ``(N,)`` int class index of each item.
        keys: a stable identity per item (relative path, or generator index).
        fingerprint: hash of where the items come from and which items were selected.
        image_size: the side of the square images :meth:`read` returns, or ``None`` when
            sizes vary (files), in which case pipelines resize each image to batch them.
        reader: item index -> RGB uint8 array.
        splits: "train", "val", "test" -> item indices.
        skipped: ``(key, reason)`` for files left out (not images, unreadable).
        content_hashes: a hash of each item's file bytes (folder datasets), to find
            identical images across splits (:func:`leakage`); ``None`` otherwise.
        origin: where a versioned dataset's items come from (a made dataset: its kind, id,
            name, version and folder), recorded in each run's ``split.json``; else ``None``.
    """

    name: str
    class_names: list
    labels: np.ndarray
    keys: list
    fingerprint: str
    image_size: int | None
    reader: Callable
    splits: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    content_hashes: list | None = None
    origin: dict | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def read(self, index: int) -> np.ndarray:
        """Return item ``index`` as an RGB uint8 array."""
        return self.reader(int(index))

    def read_batch(self, indices) -> np.ndarray:
        """Return several same-size items as one ``(B, H, W, 3)`` uint8 array."""
        return np.stack([self.reader(int(i)) for i in indices])

    def counts(self, split: str | None = None) -> dict:
        """Images per class, for the whole data or one split."""
        labels = self.labels if split is None else self.labels[self.splits[split]]
        found = np.bincount(labels, minlength=self.num_classes)
        return {name: int(n) for name, n in zip(self.class_names, found)}




def cap(data: Data, per_class: int, seed: int, by_hash: bool = False) -> Data:
    """Keep at most ``per_class`` items of each class (a seeded choice), in item order.
    ``by_hash`` (a made dataset): the items with the lowest seeded scores of their content
    hashes, so a photo added to a full class replaces at most one photo, not the choice."""
    if not per_class or np.bincount(data.labels).max() <= per_class:
        return data
    rng = np.random.default_rng([seed, 1])
    keep = []
    for label in range(data.num_classes):
        members = np.flatnonzero(data.labels == label)
        if by_hash and data.content_hashes is not None:
            scores = [hash_score(data.content_hashes[i], seed, "cap") for i in members]
            keep.append(np.sort(members[np.argsort(scores, kind="stable")[:per_class]]))
            continue
        keep.append(np.sort(rng.permutation(members)[:per_class]))
    keep = np.sort(np.concatenate(keep))
    reader = data.reader
    return Data(
        name=data.name,
        class_names=data.class_names,
        labels=data.labels[keep],
        keys=[data.keys[i] for i in keep],
        fingerprint=content_hash([data.fingerprint, "cap"] + [str(i) for i in keep]),
        image_size=data.image_size,
        reader=lambda index: reader(int(keep[index])),
        skipped=data.skipped,
        content_hashes=None if data.content_hashes is None else [data.content_hashes[i] for i in keep],
        origin=data.origin,
    )


def stratified_split(labels, class_names, val_fraction, test_fraction, seed, hashes=None) -> dict:
    """Split item indices per class into train/val/test, the same for the same seed.

    Every class gets at least one item in each split. Without ``hashes`` each class is a
    seeded permutation cut by the fractions (built-in datasets and folders: their recorded
    figures stay as they were). With ``hashes`` (each item's content hash, a class's items in
    the order they were added: a made dataset) the split stays put as photos are added: the
    first three photos of a class take one split each (by their hashes' order), every later
    photo is placed by its own hash against the fractions (:func:`placed_by_hash`), so an
    added photo never moves another one and an updated run shares its test photos with the
    run before.

    Raises:
        DataError: a class has fewer than 3 items.
    """
    rng = np.random.default_rng([seed, 2])
    parts = {"train": [], "val": [], "test": []}
    for label, name in enumerate(class_names):
        members = np.flatnonzero(labels == label)
        n = len(members)
        n_test = max(1, round(n * test_fraction))
        n_val = max(1, round(n * val_fraction))
        if n - n_test - n_val < 1:
            raise DataError(
                f"Class '{name}' has only {n} image(s); each class needs at least 3 (one each "
                "for training, validation and test), so add images or remove the class."
            )
        if hashes is not None:
            chosen = placed_by_hash([hashes[i] for i in members], val_fraction, test_fraction, seed)
            for split in parts:
                parts[split].append(members[[i for i, s in enumerate(chosen) if s == split]])
            continue
        members = rng.permutation(members)
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test:n_test + n_val])
        parts["train"].append(members[n_test + n_val:])
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}


def placed_by_hash(hashes, val_fraction, test_fraction, seed) -> list:
    """The split of each photo of one class (``hashes`` in the order they were added, at
    least three): the first three take test, val and train in the order of their scores,
    each later one ``test`` when its score is below ``test_fraction``, ``val`` below the two
    fractions together, else ``train``. A score is a number in [0, 1) drawn from the seed
    and the photo's hash, so a photo's split depends on nothing added after it."""
    scores = [hash_score(h, seed, "split") for h in hashes]
    chosen = [""] * len(hashes)
    for split, position in zip(("test", "val", "train"), np.argsort(scores[:3], kind="stable")):
        chosen[position] = split
    for position in range(3, len(hashes)):
        score = scores[position]
        chosen[position] = ("test" if score < test_fraction
                            else "val" if score < test_fraction + val_fraction else "train")
    return chosen


def hash_score(content: str, seed: int, purpose: str) -> float:
    """A number in [0, 1) fixed by a photo's content hash, the seed and what it is for."""
    return int(hashlib.sha256(f"{purpose}|{seed}|{content}".encode()).hexdigest()[:13], 16) / 16 ** 13


def balanced_class_weights(labels, num_classes) -> np.ndarray:
    """Weights ``n / (k * n_c)`` so every class contributes equally to the loss."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1))
    return weights.astype(np.float32)


def content_hash(parts) -> str:
    """16 hex digits of the sha256 of ``parts`` (as strings, each ended by a NUL)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
