"""Which devices training uses: all local GPUs (mixed precision) when present, else CPU.

- ``TF_CONFIG`` set: ``MultiWorkerMirroredStrategy``, this process one worker of a cluster
  (:mod:`tl.cluster`; the app's workers never have it: :mod:`tl.jobs` leaves it out).
- one or more GPUs: ``MirroredStrategy`` over all of them, ``mixed_float16``.
- ``TL_CPU_REPLICAS=N`` (N > 1): the CPU split into N logical devices under
  ``MirroredStrategy``; a way to exercise the distributed path without GPUs.
- otherwise: TensorFlow's default strategy on the CPU.
"""

import os
import shutil
import subprocess

from tl import cluster


def setup():
    """Configure TensorFlow and Keras for this process; return ``(strategy, info)``.

    Must run before any model is built. ``info`` is a JSON-able description.
    """
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass
    replicas = int(os.environ.get("TL_CPU_REPLICAS") or 0)
    if replicas > 1 and not gpus:
        _split_cpu(tf, replicas)

    role = cluster.role()
    if role:
        strategy = cluster.strategy()
        kind = "multi-worker"
    elif gpus:
        strategy = tf.distribute.MirroredStrategy()
        kind = "gpu"
    elif replicas > 1:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
        strategy = tf.distribute.MirroredStrategy(devices)
        kind = "cpu-mirrored"
    else:
        strategy = tf.distribute.get_strategy()
        kind = "cpu"
    policy = "mixed_float16" if gpus else "float32"
    keras.mixed_precision.set_global_policy(policy)
    info = {
        "kind": kind,
        "replicas": strategy.num_replicas_in_sync,
        "gpus": [gpu_name(tf, g) for g in gpus],
        # Training's mixed-precision policy; the frozen-backbone passes record their own
        # (engine, engine_precision: tl.engine).
        "train_precision": policy,
    }
    if role:  # how many processes train together, and which one this is
        info.update(role.as_record())
    return strategy, info


def _split_cpu(tf, replicas: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )
    except RuntimeError:  # TensorFlow already initialised: keep what it has
        pass


def gpu_name(tf, device) -> str:
    try:
        return tf.config.experimental.get_device_details(device).get("device_name", device.name)
    except Exception:
        return device.name


def describe_quickly() -> str:
    """A one-line guess of the training device without importing TensorFlow.

    Uses ``nvidia-smi`` when it exists (fast); the authoritative answer is in each run's
    ``device`` event.
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=5)
            names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
            if out.returncode == 0 and names:
                return f"GPU: {', '.join(names)}"
        except (OSError, subprocess.TimeoutExpired):
            pass
    return f"CPU ({os.cpu_count() or 1} cores)"
