"""prometheus-client's multiprocess mode, chosen before prometheus-client is first imported (it picks
its mode then): each worker writes its samples to one directory, and any of them reports the sum."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # the operator may choose the directory


def share_metrics_between_workers() -> None:
    """Give the workers of `gateway serve` a metrics directory, unless the operator chose one."""
    if not os.environ.get(MULTIPROC_ENV):
        directory = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ[MULTIPROC_ENV] = directory
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
