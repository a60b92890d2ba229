"""BagWriter: rosbag2 bags in MCAP storage that survive a crash of the writer.

rosbags' `Writer` does the rosbag2 layer (connections, message definitions from the
typestore, metadata.yaml with `custom_data`); the MCAP bytes come from Foxglove's `mcap`
Writer inside `_McapStorage`, a storage plugin for it. rosbags' own MCAP storage keeps
the open chunk in memory until it holds 1 MiB and writes nothing before close, so a
`kill -9` could lose minutes of a slow topic. `mcap`'s `Writer.flush()` writes the open
chunk as one complete record (with its CRC and message indexes) and flushes the file;
BagWriter calls it at least every `flush_interval_s`, so what was written longer ago
than that is in the kernel's page cache, which outlives the process, and `recover_bag`
rebuilds the summary from it.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType

from mcap.writer import LIBRARY_IDENTIFIER, CompressionType
from mcap.writer import Writer as McapWriter
from rosbags.interfaces import Connection, MessageDefinitionFormat, Qos
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.rosbag2.enums import CompressionMode
from rosbags.typesys.store import Typestore

from drivestack.provenance import git_commit
from ros_nodes.bag.contents import DRIVESTACK_METADATA, ROSBAG2_METADATA
from ros_nodes.bag.errors import BagError

log = logging.getLogger(__name__)


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def provenance() -> dict[str, str]:
    """What made this bag: drivestack version, git commit (`-dirty` if modified), time."""
    return {"drivestack_version": _package_version("drivestack"), "git_commit": git_commit(),
            "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def as_strings(values: Mapping[str, object]) -> dict[str, str]:
    """rosbag2's custom_data is string -> string: non-strings are stored as JSON."""
    return {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in values.items()}


_COMPRESSION = {"": CompressionType.NONE, "zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4}


class _McapStorage:
    """rosbags storage plugin (its `StorageWriter` protocol) around `mcap`'s Writer.

    The channels' metadata and the closing "rosbag2" metadata record are what rosbag2's
    own MCAP plugin writes, so `ros2 bag` reads the file as one of its own.
    """

    def __init__(self, path: Path, compression: CompressionMode, *, chunk_size_bytes: int = 1 << 20,
                 chunk_compression: str = "") -> None:
        if compression != CompressionMode.NONE:
            raise BagError("use BagWriter(compression=...) for chunk compression")
        self.path = path / f"{path.name}_0.mcap"  # rosbag2's file name for the first split
        self._file = self.path.open("xb")
        self._mcap = McapWriter(self._file, chunk_size=chunk_size_bytes, compression=_COMPRESSION[chunk_compression],
                                enable_crcs=True)
        self._mcap.start(profile="ros2", library=f"drivestack {_package_version('drivestack')}, rosbags "
                                                 f"{_package_version('rosbags')}, {LIBRARY_IDENTIFIER}")
        self._schema_ids: dict[str, int] = {}
        self._channel_ids: dict[int, int] = {}  # rosbags connection id -> MCAP channel id
        self._sequence: dict[int, int] = defaultdict(int)

    def add_msgtype(self, connection: Connection) -> None:
        encoding = "ros2msg" if connection.msgdef.format == MessageDefinitionFormat.MSG else "ros2idl"
        self._schema_ids[connection.msgtype] = self._mcap.register_schema(
            connection.msgtype, encoding, connection.msgdef.data.encode())

    def add_connection(self, connection: Connection, offered_qos_profiles: str) -> None:
        self._channel_ids[connection.id] = self._mcap.register_channel(
            connection.topic, "cdr", self._schema_ids[connection.msgtype],
            {"offered_qos_profiles": offered_qos_profiles, "topic_type_hash": connection.digest})

    def write(self, connection: Connection, timestamp: int, data: bytes | memoryview) -> None:
        cid = self._channel_ids[connection.id]
        self._mcap.add_message(cid, log_time=timestamp, data=data, publish_time=timestamp,  # type: ignore[arg-type]
                               sequence=self._sequence[cid] & 0xFFFFFFFF)
        self._sequence[cid] += 1

    def write_metadata(self, name: str, values: dict[str, str]) -> None:
        self._mcap.add_metadata(name, values)

    def flush(self) -> None:
        """Write the open chunk (a complete record with its message indexes) and hand the
        file to the kernel."""
        self._mcap.flush()

    def close(self, version: int, metadata: str) -> None:
        """rosbag2's own metadata record, the last chunk, then summary and footer (MCAP's index)."""
        self._mcap.add_metadata(ROSBAG2_METADATA, {"serialized_metadata": metadata})
        self._mcap.finish()
        self._file.close()

    def abort(self) -> None:
        """Keep what was written (recoverable) and release the file."""
        try:
            self.flush()
        finally:
            self._file.close()


class _Rosbag2Writer(Writer):
    def __init__(self, path: Path, *, chunk_size_bytes: int, compression: str) -> None:
        super().__init__(path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.STORAGE_PLUGINS = {StoragePlugin.MCAP: functools.partial(  # type: ignore[misc]
            _McapStorage, chunk_size_bytes=chunk_size_bytes, chunk_compression=compression)}


class BagWriter:
    """A rosbag2 bag (directory with metadata.yaml and one .mcap file) being written.

    Thread-safe: a background thread closes the open chunk every `flush_interval_s`,
    so messages are on disk that long after `write` even when no more arrive.
    """

    def __init__(self, path: str | Path, metadata: Mapping[str, object] | None = None, *,
                 flush_interval_s: float = 0.5, chunk_size_bytes: int = 1 << 20, compression: str = "") -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} exists already: not overwriting it (choose a new bag path)")
        if compression not in _COMPRESSION:
            raise BagError(f"unknown chunk compression {compression!r} (use '', 'zstd' or 'lz4')")
        self.metadata = {**provenance(), **as_strings(metadata or {})}
        try:
            self._bag = _Rosbag2Writer(self.path, chunk_size_bytes=chunk_size_bytes, compression=compression)
            self._bag.open()
        except WriterError as exc:  # created by someone else since the check above
            raise BagError(f"{self.path}: {exc}") from None
        except OSError as exc:
            raise BagError(f"cannot create the bag {self.path}: {exc.strerror or exc}") from None
        self._storage: _McapStorage = self._bag.storage  # type: ignore[assignment]
        self._connections: dict[str, Connection] = {}
        self.message_counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._flush_error: BaseException | None = None
        self.update_metadata({})
        self._flusher = threading.Thread(target=self._flush_every, args=(flush_interval_s,),
                                         name=f"bag-flush {self.path.name}", daemon=True)
        self._flusher.start()

    def add_topic(self, name: str, msgtype: str, *, qos_profiles: Sequence[Qos] = (),
                  typestore: Typestore | None = None) -> None:
        """Declare a topic before writing to it; its definition comes from the typestore."""
        from ros_nodes.typestore import typestore as project_typestore
        store = typestore or project_typestore()
        if msgtype not in store.fielddefs:
            raise BagError(f"topic {name}: unknown message type {msgtype!r} (not in the typestore)")
        if name in self._connections:
            raise BagError(f"topic {name} was already added")
        with self._lock:
            self._connections[name] = self._bag.add_connection(name, msgtype, typestore=store,
                                                               offered_qos_profiles=list(qos_profiles))
        self.message_counts[name] = 0

    def write(self, topic: str, stamp_ns: int, cdr: bytes | memoryview) -> None:
        """Append one CDR-serialised message; `stamp_ns` becomes its log time."""
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f"topic {topic} was not added to the bag (call add_topic first)")
        with self._lock:
            self._raise_flush_error()
            self._bag.write(connection, stamp_ns, cdr)
        self.message_counts[topic] += 1

    def update_metadata(self, values: Mapping[str, object]) -> None:
        """Merge into the bag's custom metadata, on disk at once (it survives a crash)."""
        with self._lock:
            self.metadata.update(as_strings(values))
            for key, value in self.metadata.items():
                self._bag.set_custom_data(key, value)
            self._storage.write_metadata(DRIVESTACK_METADATA, dict(self.metadata))
            self._storage.flush()

    def flush(self) -> None:
        with self._lock:
            self._storage.flush()

    def close(self, extra_metadata: Mapping[str, object] | None = None) -> Path:
        """Write the last chunk, the MCAP summary and metadata.yaml; returns the bag path."""
        if self._closed.is_set():
            return self.path
        if extra_metadata:
            self.update_metadata(extra_metadata)
        self._closed.set()
        self._flusher.join()
        with self._lock:
            self._raise_flush_error()
            self._bag.close()
        return self.path

    def abort(self) -> None:
        """Stop without the summary (the bag is then recoverable with `recover_bag`)."""
        self._closed.set()
        self._flusher.join()
        with self._lock:
            self._bag.abort()

    def _flush_every(self, interval_s: float) -> None:
        while not self._closed.wait(interval_s):
            try:
                self.flush()
            except BaseException as exc:  # surfaced by the next write or close
                self._flush_error = exc
                return

    def _raise_flush_error(self) -> None:
        if self._flush_error is not None:
            raise BagError(f"writing {self.path} failed: {self._flush_error}") from self._flush_error

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
