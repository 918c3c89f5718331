"""Test-split metrics from a model's probabilities: accuracy, loss, confusion matrix,
per-class accuracy and the misclassified items."""

import numpy as np


def classification_report(probs, labels, class_names) -> dict:
    """Accuracy, loss, confusion matrix, per-class accuracy and the misclassified items
    (their positions in ``labels``, most confident mistakes first)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    predicted = probs.argmax(axis=1)
    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {
        name: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
        for i, name in enumerate(class_names)
    }
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")]
    return {
        "test_accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "test_loss": float(-np.log(picked).mean()) if len(labels) else 0.0,
        "class_names": list(class_names),
        "confusion_matrix": confusion.tolist(),
        "per_class_accuracy": per_class,
        "misclassified": [
            {"index": int(i), "true": class_names[labels[i]], "predicted": class_names[predicted[i]],
             "confidence": round(float(probs[i, predicted[i]]), 6)}
            for i in wrong
        ],
    }
