"""Which files make up a bag: a rosbag2 directory (with or without metadata.yaml) or one
storage file given directly (.mcap, .db3)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ros_nodes.bag.errors import BagError

_SUFFIX_STORAGE = {".mcap": "mcap", ".db3": "sqlite3"}


@dataclass(frozen=True)
class BagFiles:
    path: Path
    storage: str  # "mcap" | "sqlite3"
    files: list[Path]
    metadata: dict | None  # metadata.yaml's rosbag2_bagfile_information, None if absent

    @property
    def compression_mode(self) -> str:
        mode = (self.metadata or {}).get("compression_mode") or ""
        return "" if mode.lower() == "none" else mode.lower()


def locate(path: str | Path) -> BagFiles:
    path = Path(path)
    if not path.exists():
        raise BagError(f"no bag at {path}")
    if path.is_file():
        storage = _SUFFIX_STORAGE.get(path.suffix)
        if storage is None:
            raise BagError(f"{path}: not a bag (give a rosbag2 directory, an .mcap or a .db3 file)")
        return BagFiles(path, storage, [path], None)
    metadata = _read_metadata(path / "metadata.yaml")
    if metadata is not None:
        storage = str(metadata.get("storage_identifier", ""))
        names = metadata.get("relative_file_paths") or []
        files = [path / Path(str(n)).name for n in names]
        if missing := [f.name for f in files if not f.exists()]:
            raise BagError(f"{path}: metadata.yaml lists files that are missing: {', '.join(missing)}")
        if storage not in ("mcap", "sqlite3"):
            raise BagError(f"{path}: unsupported storage {storage!r} (mcap and sqlite3 are)")
        return BagFiles(path, storage, files, metadata)
    for suffix, storage in _SUFFIX_STORAGE.items():
        files = sorted(path.glob(f"*{suffix}"))
        if files:
            return BagFiles(path, storage, files, None)
    raise BagError(f"{path}: not a bag (no metadata.yaml, .mcap or .db3 file in it)")


def _read_metadata(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        loaded = yaml.safe_load(path.read_text())
        return dict(loaded["rosbag2_bagfile_information"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise BagError(f"{path} is not valid rosbag2 metadata: {exc}") from None
