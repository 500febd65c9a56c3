"""One line naming the machine a benchmark ran on, for its printout and its JSON record.

The scripts in bench/ run as ``python bench/NAME.py``, which puts this folder on ``sys.path``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys


def machine() -> str:
    """'CPU model, N logical CPUs', plus the JAX devices when the script has imported JAX."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:  # noqa: BLE001 - best effort description
        name = platform.processor() or platform.machine()
    text = f"{name}, {os.cpu_count()} logical CPUs"
    jax = sys.modules.get("jax")
    if jax is not None:
        devices = jax.devices()
        text += f"; {len(devices)} × {devices[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}"
    return text
