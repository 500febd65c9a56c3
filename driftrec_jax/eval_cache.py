"""What `driftrec evaluate` keeps in its --out folder between runs: the per-image results
(cache.jsonl, so that a rerun resumes) and the Inception-v3 features of measured images
(features/, for FID and KID).

cache.jsonl holds one JSON object per line (keys sorted): the per-image row of evaluate with its
`key` = method key, folder, protocol and image name joined by U+001F (`cache_key`). A later line
with the same key replaces an earlier one; a line cut short by a killed run is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

__all__ = ["Cache", "Features", "cache_key"]


def cache_key(method_key: str, folder_key: str, protocol_key: str, name: str) -> str:
    """The key of one per-image result (and of its features)."""
    return "\x1f".join((method_key, folder_key, protocol_key, name))


class Cache:
    """Append-only JSON lines of per-image results, keyed by method, folder, protocol, image."""

    key = staticmethod(cache_key)

    def __init__(self, path: str, writable: bool = True):
        self.path = path
        self.rows: dict[str, dict] = {}
        self._f = None
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut short by a killed run
                        continue
                    self.rows[row["key"]] = row
        if not writable:  # a process other than 0 of a multi-process evaluation: process 0 writes
            return
        self._f = open(path, "a", encoding="utf-8")
        if self._f.tell() > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line cut short by a killed run: end it
                    self._f.write("\n")

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def put(self, row: dict) -> None:
        self.rows[row["key"]] = row
        if self._f is not None:
            self._f.write(json.dumps(row, sort_keys=True) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


class Features:
    """Inception-v3 pool features (2048 float32) of measured images, one .npy file per cache key."""

    def __init__(self, folder: str):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def path(self, key: str) -> str:
        return os.path.join(self.folder, hashlib.sha1(key.encode("utf-8")).hexdigest()[:24] + ".npy")

    def has(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def ensure(self, key: str, image: np.ndarray) -> None:
        if not self.has(key):
            from . import fid as F
            from .images import atomic_write

            f = F.inception_features(np.asarray(image, np.float32)[None], batch_size=1)[0]
            with atomic_write(self.path(key)) as fp:
                np.save(fp, f)

    def load(self, key: str) -> np.ndarray:
        return np.load(self.path(key))
