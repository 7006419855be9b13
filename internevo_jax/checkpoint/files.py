"""Local-folder counterpart of S3Store: the same small file API over a LocalLocation."""

from __future__ import annotations

import os
import shutil

from internevo_jax.checkpoint.storage import LocalLocation, Location, S3Location, S3Timeouts


class LocalFiles:
    """list / read / write / delete under a local folder, mirroring S3Store's method names."""

    def list_children(self, loc: LocalLocation) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(loc.path) if e.is_dir())
        except FileNotFoundError:
            return []

    def list_files(self, loc: LocalLocation) -> list[str]:
        out = []
        for root, _, names in os.walk(loc.path):
            out.extend(os.path.relpath(os.path.join(root, n), loc.path).replace(os.sep, "/") for n in names)
        return out

    def exists(self, loc: LocalLocation) -> bool:
        return os.path.exists(loc.path)

    def read_text(self, loc: LocalLocation) -> str:
        with open(loc.path, encoding="utf-8") as f:
            return f.read()

    def write_text(self, loc: LocalLocation, text: str) -> None:
        # Written under a temporary name, synced, then renamed: the file is either absent or whole.
        tmp = loc.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, loc.path)

    def delete_tree(self, loc: LocalLocation) -> int:
        if not os.path.exists(loc.path):
            return 0
        shutil.rmtree(loc.path, ignore_errors=True)
        return 1


def files_for(location: Location, timeouts: S3Timeouts | None = None):
    """The file API (LocalFiles or S3Store) for a location; `timeouts` (the `ckpt.s3_*` keys, default
    their defaults) bound the requests of an S3Store."""
    if isinstance(location, S3Location):
        from internevo_jax.checkpoint.s3 import S3Store

        return S3Store(location.settings, timeouts or S3Timeouts.default())
    return LocalFiles()
