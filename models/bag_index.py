"""Random access to a bag's messages for training: an index built once, cached beside it.

A training loader asks for "frame 812 of this bag" thousands of times an epoch, in
random order; scanning the bag each time would cost seconds. The index lists every
message as (channel, log time, chunk, offset inside the chunk's records), read from
MCAP's own message indexes (no message is decompressed to build it), and is saved as
``drivestack_index.npz`` in the bag directory, keyed on the MCAP file's size and
modification time. A read decompresses one chunk (a few hundred KiB: the recorder
closes chunks at 1 MiB) and keeps the last few in a small per-process cache, so
sequential readers (evaluation, replay-like passes) decompress each chunk once.

Frames are the log times of a reference topic; the other topics of a frame are the
messages with the same log time (every simulator frame's messages carry its stamp).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import numpy as np
from mcap.data_stream import ReadDataStream
from mcap.records import Chunk, Message, MessageIndex
from mcap.stream_reader import StreamReader, get_chunk_data_stream
from rosbags.interfaces import MessageDefinitionFormat

from ros_nodes.bag.contents import read_chunk, read_mcap
from ros_nodes.bag.errors import BagError
from ros_nodes.bag.layout import locate
from ros_nodes.typestore import TypeDefinition, typestore_for

INDEX_NAME = "drivestack_index.npz"
INDEX_VERSION = 1
_MESSAGE_OPCODE = 0x05
_CHUNK_OPCODE = 0x06
_RECORD_PREFIX = 9  # opcode (1 byte) + record length (8 bytes)


@dataclass(frozen=True)
class _Key:
    """What the index was built from: rebuilt when the file changes."""

    size: int
    mtime_ns: int


class BagIndex:
    """Every message of one bag's MCAP file, addressable by row.

    ``stamps_ns[i]``, ``channels[i]``, ``chunks[i]``, ``offsets[i]`` describe message
    row ``i`` (rows sorted by log time, then channel); ``chunk_offsets[k]`` is the file
    offset of chunk ``k``.
    """

    def __init__(self, mcap_path: Path, topics: dict[int, tuple[str, str]], definitions: list[TypeDefinition],
                 stamps_ns: np.ndarray, channels: np.ndarray, chunks: np.ndarray, offsets: np.ndarray,
                 chunk_offsets: np.ndarray, metadata: dict[str, str]) -> None:
        self.mcap_path = mcap_path
        self.topics = topics  # channel id -> (topic, msgtype)
        self.definitions = definitions
        self.stamps_ns, self.channels, self.chunks, self.offsets = stamps_ns, channels, chunks, offsets
        self.chunk_offsets = chunk_offsets
        self.metadata = metadata
        self._by_topic = {topic: cid for cid, (topic, _) in topics.items()}

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def channel_of(self, topic: str) -> int | None:
        return self._by_topic.get(topic)

    def msgtype(self, topic: str) -> str:
        return self.topics[self._by_topic[topic]][1]

    def rows(self, topic: str) -> np.ndarray:
        """Row numbers of the topic's messages, in time order (empty if the bag lacks it)."""
        cid = self.channel_of(topic)
        return np.zeros(0, np.int64) if cid is None else np.flatnonzero(self.channels == cid)

    def frames(self, reference: str, required: Sequence[str] = (), optional: Sequence[str] = ()) -> np.ndarray:
        """(F, 1 + len(required) + len(optional)) rows: one line per message of
        ``reference`` for which every ``required`` topic has a message at the same log
        time; an ``optional`` topic without one gets -1."""
        ref = self.rows(reference)
        columns = [ref]
        keep = np.ones(len(ref), bool)
        for k, topic in enumerate([*required, *optional]):
            rows = self.rows(topic)
            stamps = self.stamps_ns[rows]
            at = np.searchsorted(stamps, self.stamps_ns[ref])
            found = at < len(rows)
            found[found] = stamps[at[found]] == self.stamps_ns[ref][found]
            column = np.where(found, rows[np.minimum(at, max(len(rows) - 1, 0))] if len(rows) else -1, -1)
            if k < len(required):
                keep &= found
            columns.append(column)
        return np.stack(columns, axis=1)[keep]

    # -- saving and loading --------------------------------------------------------

    def save(self, path: Path, key: _Key) -> None:
        channel_ids = np.array(sorted(self.topics), np.int64)
        np.savez(path, version=INDEX_VERSION, size=key.size, mtime_ns=key.mtime_ns, mcap=self.mcap_path.name,
                 stamps_ns=self.stamps_ns, channels=self.channels, chunks=self.chunks, offsets=self.offsets,
                 chunk_offsets=self.chunk_offsets, channel_ids=channel_ids,
                 topic_names=np.array([self.topics[c][0] for c in channel_ids], dtype=object),
                 msgtypes=np.array([self.topics[c][1] for c in channel_ids], dtype=object),
                 definitions=np.array([(d.msgtype, d.format.name, d.text) for d in self.definitions], dtype=object),
                 metadata=np.array(sorted(self.metadata.items()), dtype=object).reshape(-1, 2))

    @classmethod
    def load(cls, path: Path, mcap_path: Path, key: _Key) -> BagIndex | None:
        """The cached index, or None if it is missing, stale or unreadable."""
        try:
            with np.load(path, allow_pickle=True) as data:
                if (int(data["version"]) != INDEX_VERSION or int(data["size"]) != key.size
                        or int(data["mtime_ns"]) != key.mtime_ns or str(data["mcap"]) != mcap_path.name):
                    return None
                topics = {int(c): (str(t), str(m)) for c, t, m in
                          zip(data["channel_ids"], data["topic_names"], data["msgtypes"])}
                definitions = [TypeDefinition(str(t), MessageDefinitionFormat[str(f)], str(x))
                               for t, f, x in data["definitions"]]
                return cls(mcap_path, topics, definitions, data["stamps_ns"], data["channels"], data["chunks"],
                           data["offsets"], data["chunk_offsets"], {str(k): str(v) for k, v in data["metadata"]})
        except (OSError, KeyError, ValueError, EOFError):
            return None


def _key(mcap_path: Path) -> _Key:
    stat = mcap_path.stat()
    return _Key(stat.st_size, stat.st_mtime_ns)


def _mcap_file(bag: str | Path) -> tuple[Path, Path]:
    """(bag directory or file, its single MCAP file)."""
    files = locate(bag)
    if files.storage != "mcap":
        raise BagError(f"{files.path}: training data must be MCAP bags (this one is {files.storage}); "
                       f"record with `drivestack collect` or convert it with `ros2 bag convert`")
    if len(files.files) != 1:
        raise BagError(f"{files.path}: {len(files.files)} storage files; datasets read bags of one file")
    if files.compression_mode == "message":
        raise BagError(f"{files.path}: per-message compression is not supported for datasets (chunk "
                       "compression is)")
    return files.path, files.files[0]


def build_index(mcap_path: Path) -> BagIndex:
    """Read the MCAP summary and message indexes of a closed file into an index."""
    contents = read_mcap(mcap_path)
    if not contents.complete:
        raise BagError(f"{mcap_path} was not closed by its writer (a crash or a copy in progress): run "
                       f"`drivestack bag recover {mcap_path.parent}` first, which keeps everything written")
    topics, definitions = {}, []
    for cid, channel in contents.channels.items():
        schema = contents.schemas.get(channel.schema_id)
        msgtype = schema.name if schema else "<no schema>"
        topics[cid] = (channel.topic, msgtype)
        fmt = {"ros2msg": MessageDefinitionFormat.MSG, "ros2idl": MessageDefinitionFormat.IDL}.get(
            schema.encoding if schema else "", MessageDefinitionFormat.NONE)
        definitions.append(TypeDefinition(msgtype, fmt, schema.data.decode(errors="replace") if schema else ""))
    stamps, channels, chunks, offsets = [], [], [], []
    with mcap_path.open("rb") as f:
        for k, chunk in enumerate(contents.chunks):
            for cid, entries in _message_indexes(f, chunk.offset, mcap_path):
                stamps.extend(t for t, _ in entries)
                offsets.extend(o for _, o in entries)
                channels.extend([cid] * len(entries))
                chunks.extend([k] * len(entries))
    stamps_a = np.array(stamps, np.int64)
    channels_a = np.array(channels, np.int32)
    order = np.lexsort((channels_a, stamps_a))
    return BagIndex(mcap_path, topics, definitions, stamps_a[order], channels_a[order],
                    np.array(chunks, np.int32)[order], np.array(offsets, np.int64)[order],
                    np.array([c.offset for c in contents.chunks], np.int64), contents.custom_metadata())


def _message_indexes(f: BinaryIO, chunk_offset: int, path: Path) -> list[tuple[int, list[tuple[int, int]]]]:
    """The MessageIndex records that follow the chunk at ``chunk_offset``."""
    f.seek(chunk_offset)
    records = StreamReader(f, skip_magic=True, emit_chunks=True).records
    chunk = next(records)
    if not isinstance(chunk, Chunk):
        raise BagError(f"{path}: no chunk at byte {chunk_offset} where the summary says one is")
    out = []
    for record in records:
        if not isinstance(record, MessageIndex):
            break
        out.append((record.channel_id, record.records))
    if not out and chunk.uncompressed_size:
        raise BagError(f"{path}: the chunk at byte {chunk_offset} has no message index (written without "
                       "indexes); run `drivestack bag recover` to rewrite it")
    return out


def open_index(bag: str | Path, *, rebuild: bool = False) -> BagIndex:
    """The bag's index: loaded from beside the bag, or built and saved there (if the
    directory is writable; otherwise it is rebuilt in memory each time)."""
    bag_path, mcap_path = _mcap_file(bag)
    key = _key(mcap_path)
    cache = (bag_path if bag_path.is_dir() else bag_path.parent) / INDEX_NAME
    if not rebuild and (index := BagIndex.load(cache, mcap_path, key)) is not None:
        return index
    index = build_index(mcap_path)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp.npz")
    try:
        index.save(tmp, key)
        os.replace(tmp, cache)  # atomic: parallel loader workers never read a half file
    except OSError:
        tmp.unlink(missing_ok=True)
    return index


class MessageSource:
    """Reads and deserialises indexed messages of one bag; cheap to pickle into loader
    workers (each process opens the file for itself on first use)."""

    def __init__(self, index: BagIndex, cached_chunks: int = 4) -> None:
        self.index = index
        self.cached_chunks = cached_chunks
        self._file: BinaryIO | None = None
        self._file_pid = 0
        self._chunks: OrderedDict[int, bytes] = OrderedDict()
        self._store = None

    def __getstate__(self) -> dict:
        return {"index": self.index, "cached_chunks": self.cached_chunks}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["index"], state["cached_chunks"])

    @property
    def typestore(self):
        if self._store is None:
            self._store, _ = typestore_for(self.index.definitions)
        return self._store

    def raw(self, row: int) -> bytes:
        """The CDR bytes of message ``row``."""
        data = self._chunk(int(self.index.chunks[row]))
        offset = int(self.index.offsets[row])
        if data[offset] != _MESSAGE_OPCODE:
            raise BagError(f"{self.index.mcap_path}: no message at offset {offset} of chunk "
                           f"{self.index.chunks[row]} (the file changed since its index was built?)")
        length = int.from_bytes(data[offset + 1: offset + _RECORD_PREFIX], "little")
        stream = ReadDataStream(BytesIO(data[offset + _RECORD_PREFIX: offset + _RECORD_PREFIX + length]))
        return Message.read(stream, length).data

    def message(self, row: int):
        """Message ``row`` deserialised (a rosbags dataclass)."""
        msgtype = self.index.topics[int(self.index.channels[row])][1]
        try:
            return self.typestore.deserialize_cdr(self.raw(row), msgtype)
        except BagError:
            raise
        except Exception as exc:  # rosbags raises several types for damaged CDR
            raise BagError(f"{self.index.mcap_path}: message at t={self.index.stamps_ns[row]} ns "
                           f"({msgtype}) does not deserialise: {exc}") from None

    def _chunk(self, k: int) -> bytes:
        data = self._chunks.get(k)
        if data is not None:
            self._chunks.move_to_end(k)
            return data
        if self._file is None or self._file_pid != os.getpid():
            # A forked loader worker inherits the parent's file object, whose offset the
            # two processes would then move under each other: each opens its own.
            self._file, self._file_pid = self.index.mcap_path.open("rb"), os.getpid()
        chunk = self._read_chunk(int(self.index.chunk_offsets[k]))
        stream, size = get_chunk_data_stream(chunk, validate_crc=False)
        data = stream.read(size)
        self._chunks[k] = data
        if len(self._chunks) > self.cached_chunks:
            self._chunks.popitem(last=False)
        return data

    def _read_chunk(self, offset: int) -> Chunk:
        """The chunk record at ``offset`` in two reads (mcap's stream reader makes ~10)."""
        self._file.seek(offset)
        prefix = self._file.read(_RECORD_PREFIX)
        if len(prefix) < _RECORD_PREFIX or prefix[0] != _CHUNK_OPCODE:
            return read_chunk(self._file, offset)  # let mcap's reader say what is there
        length = int.from_bytes(prefix[1:], "little")
        return Chunk.read(ReadDataStream(BytesIO(self._file.read(length))))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks.clear()
