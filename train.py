#!/usr/bin/env python
"""Train DriftRec (or the regression baseline) from a config; resumes from --workdir by itself.

    python train.py --config configs/small_ouve.py --workdir workdirs/small_ouve
    python train.py --config configs/ouve_d2kf2k.py --workdir workdirs/ouve --config.data.source=/data/D2KF2K/train

Any config field can be overridden with --config.FIELD=VALUE. See `python train.py --help`.
"""

import sys

from driftrec_jax.train_cli import main

if __name__ == "__main__":
    sys.exit(main())
