#!/usr/bin/env python
"""Restore JPEG photos with a DriftRec model; the same command as `driftrec restore`.

    python sample.py photos/ -o restored/ --checkpoint workdirs/small_ouve
    python sample.py a.jpg b.jpg -o out/ --sampler ode --tol 1e-3

See `python sample.py --help` and docs/RESTORE.md.
"""

import sys

from driftrec_jax.restore_cli import main

if __name__ == "__main__":
    sys.exit(main(prog="sample.py"))
