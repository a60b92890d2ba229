"""Read messages from bags in time order: MCAP (ours, ros2 bag's, torn ones) and sqlite3.

MCAP files are read with the `mcap` package (chunk by chunk from its summary's chunk
index, or from a scan of a torn file: see `contents`), everything else with rosbags.

Damage costs only what it touches. A torn tail, a chunk that fails its CRC, a message
that does not deserialise, a type the bag has no definition for: each becomes a
`BagProblem` (logged, collected in `BagReader.problems`) naming the file, topic and
time where known, and reading goes on. A chunk failing its CRC still yields its
messages (deserialisation catches most damage; the problem says they are unverified).
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

from mcap.records import Message
from mcap.stream_reader import StreamReader
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.typesys.store import Typestore

from ros_nodes.bag.contents import ChunkRef, chunk_records, read_chunk, read_mcap
from ros_nodes.bag.errors import BagError, BagProblem
from ros_nodes.bag.layout import locate
from ros_nodes.typestore import TypeDefinition, typestore_for

from backports import zstd  # rosbags' dependency; `compression.zstd` from Python 3.14

log = logging.getLogger(__name__)


class BagMessage(NamedTuple):
    topic: str
    msgtype: str
    stamp_ns: int  # log time
    data: object  # CDR bytes, or the deserialised message (a rosbags dataclass)


# (log time, topic, msgtype, CDR bytes) as every source yields them
_Raw = tuple[int, str, str, bytes]
_Report = Callable[[BagProblem], None]


class _Source(ABC):
    """One storage file: its topics, a typestore for them, and its messages in time order."""

    path: Path
    topics: dict[str, str]
    typestore: Typestore
    type_problems: dict[str, str]

    def __init__(self, path: Path, report: _Report) -> None:
        self.path, self.report = path, report

    def _set_types(self, definitions: list[TypeDefinition]) -> None:
        self.typestore, self.type_problems = typestore_for(definitions)

    @abstractmethod
    def messages(self, topics: Collection[str] | None) -> Iterator[_Raw]:
        """(log time, topic, msgtype, CDR bytes) of ``topics`` (None: all), in time order."""

    def close(self) -> None:
        pass


class _McapSource(_Source):
    def __init__(self, path: Path, report: _Report, compression_mode: str = "") -> None:
        super().__init__(path, report)
        self.contents = read_mcap(path)
        for problem in self.contents.problems:
            report(problem)
        self.zstd_messages = compression_mode == "message"
        self.channels = {cid: (ch.topic, self._schema_name(ch.schema_id)) for cid, ch in self.contents.channels.items()}
        self.topics = {topic: msgtype for topic, msgtype in self.channels.values()}
        definitions = []
        for channel in self.contents.channels.values():
            schema = self.contents.schemas.get(channel.schema_id)
            fmt = {"ros2msg": MessageDefinitionFormat.MSG, "ros2idl": MessageDefinitionFormat.IDL}.get(
                schema.encoding if schema else "", MessageDefinitionFormat.NONE)
            text = schema.data.decode(errors="replace") if schema else ""
            definitions.append(TypeDefinition(self.channels[channel.id][1], fmt if text else
                                              MessageDefinitionFormat.NONE, text))
        self._set_types(definitions)
        self.file = path.open("rb")
        self.unknown_channels: set[int] = set()

    def _schema_name(self, schema_id: int) -> str:
        schema = self.contents.schemas.get(schema_id)
        return schema.name if schema else "<no schema>"

    def close(self) -> None:
        self.file.close()

    def messages(self, topics: Collection[str] | None) -> Iterator[_Raw]:
        # None: everything, also messages on channels the file never declares (reported).
        wanted = None if topics is None else {cid for cid, (topic, _) in self.channels.items() if topic in topics}
        sources = [self._chunk(chunk, wanted) for chunk in self.contents.chunks
                   if wanted is None or chunk.channel_ids is None or wanted & chunk.channel_ids]
        if self.contents.loose_messages:
            sources.append(self._loose(wanted))
        for stamp_ns, cid, data in heapq.merge(*sources, key=itemgetter(0)):
            if cid is None:
                continue  # a chunk's opening marker
            if cid not in self.channels:
                if cid not in self.unknown_channels:
                    self.unknown_channels.add(cid)
                    self.report(BagProblem(self.path, f"messages of channel {cid}, which the file never declares, "
                                                      "are skipped", stamp_ns=stamp_ns))
                continue
            topic, msgtype = self.channels[cid]
            if self.zstd_messages:  # rosbag2's per-message compression
                data = zstd.decompress(data)
            yield stamp_ns, topic, msgtype, data

    def _chunk(self, chunk: ChunkRef, wanted: set[int] | None) -> Iterator[tuple[int, int | None, bytes]]:
        # First a marker at the chunk's start time, so the merge decodes a chunk only
        # when its time comes (one or a few chunks in memory, not the whole file).
        yield chunk.start_ns, None, b""
        lost = f"its messages (log times {chunk.start_ns}..{chunk.end_ns} ns) are lost"
        try:
            records, crc_ok, problem = chunk_records(read_chunk(self.file, chunk.offset), chunk.offset)
        except Exception as exc:  # noqa: BLE001 mcap's parsers raise many unrelated types
            self.report(BagProblem(self.path, f"chunk at byte {chunk.offset} unreadable "
                                              f"({type(exc).__name__}: {exc}): {lost}"))
            return
        messages = [(m.log_time, m.channel_id, m.data) for m in records
                    if isinstance(m, Message) and (wanted is None or m.channel_id in wanted)]
        if chunk.offset in self.contents.damaged_chunks:
            problem, crc_ok = None, True  # the scan reported it already
        if problem:
            after = f" after {self._where(messages[-1])}" if messages else ""
            self.report(BagProblem(self.path, f"{problem}{after}; the rest of this chunk is skipped"))
        if not crc_ok:
            topics = sorted({self.channels.get(cid, (f"<channel {cid}>",))[0] for _, cid, _ in messages})
            self.report(BagProblem(self.path, f"chunk at byte {chunk.offset} (log times {chunk.start_ns}.."
                                              f"{chunk.end_ns} ns; {', '.join(topics)}) fails its CRC check: "
                                              "its messages are passed on unverified"))
        messages.sort(key=itemgetter(0))  # stable: equal stamps keep their file order
        yield from messages

    def _loose(self, wanted: set[int] | None) -> Iterator[tuple[int, int | None, bytes]]:
        for _, offset in sorted(self.contents.loose_messages):
            self.file.seek(offset)
            m = next(StreamReader(self.file, skip_magic=True).records)
            if isinstance(m, Message) and (wanted is None or m.channel_id in wanted):
                yield m.log_time, m.channel_id, m.data

    def _where(self, message: tuple[int, int, bytes]) -> str:
        return f"{self.channels.get(message[1], ('?',))[0]} at t={message[0]} ns"


class _RosbagsSource(_Source):
    """sqlite3 (and anything else rosbags reads) through rosbags' own reader."""

    def __init__(self, path: Path, report: _Report) -> None:
        super().__init__(path, report)
        from rosbags.rosbag2 import Reader
        from rosbags.rosbag2.errors import ReaderError
        self.reader = Reader(path)
        try:
            self.reader.open()
        except (ReaderError, OSError) as exc:
            raise BagError(f"cannot read {path}: {exc}") from None
        self.topics = {c.topic: c.msgtype for c in self.reader.connections}
        self._set_types([TypeDefinition(c.msgtype, c.msgdef.format, c.msgdef.data) for c in self.reader.connections])

    def close(self) -> None:
        self.reader.close()

    def messages(self, topics: Collection[str] | None) -> Iterator[_Raw]:
        connections = [c for c in self.reader.connections if topics is None or c.topic in topics]
        if not connections:
            return
        last: tuple[str, int] | None = None
        try:
            for connection, stamp_ns, data in self.reader.messages(connections=connections):
                last = (connection.topic, stamp_ns)
                yield stamp_ns, connection.topic, connection.msgtype, data
        except Exception as exc:  # sqlite (apsw) and rosbags raise many unrelated types
            after = f" after {last[0]} at t={last[1]} ns" if last else ""
            self.report(BagProblem(self.path, f"reading stopped{after}: {exc}"))


class BagReader:
    """Several bags read as one stream in time order. Use as a context manager."""

    def __init__(self, paths: str | Path | Iterable[str | Path], problems: list[BagProblem] | None = None) -> None:
        """`problems`: a list to collect damage into as it is found (default: a new one)."""
        self.problems: list[BagProblem] = [] if problems is None else problems
        self._sources: list[_Source] = []
        if isinstance(paths, (str, Path)):
            paths = [paths]
        try:
            for path in paths:
                bag = locate(path)
                if bag.storage == "mcap" and bag.compression_mode in ("", "message"):
                    self._sources += [_McapSource(f, self._report, bag.compression_mode) for f in bag.files]
                elif bag.metadata is not None:  # rosbags reads compressed bags through metadata.yaml
                    self._sources.append(_RosbagsSource(bag.path, self._report))
                else:
                    self._sources += [_RosbagsSource(f, self._report) for f in bag.files]
        except BaseException:
            self.close()
            raise
        self._reported_types: set[tuple[Path, str]] = set()

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type, over all bags."""
        return {topic: msgtype for s in self._sources for topic, msgtype in s.topics.items()}

    def messages(self, topics: Collection[str] | None = None, *, deserialize: bool = False) -> Iterator[BagMessage]:
        """Every message (of `topics`, if given) in log-time order."""
        streams = [((stamp, topic, msgtype, data, source) for stamp, topic, msgtype, data in source.messages(topics))
                   for source in self._sources]
        for stamp_ns, topic, msgtype, data, source in heapq.merge(*streams, key=itemgetter(0)):
            if not deserialize:
                yield BagMessage(topic, msgtype, stamp_ns, data)
                continue
            if msgtype in source.type_problems:
                if (source.path, topic) not in self._reported_types:
                    self._reported_types.add((source.path, topic))
                    self._report(BagProblem(source.path, f"{source.type_problems[msgtype]}: {msgtype}; "
                                                         "its messages are skipped", topic, stamp_ns))
                continue
            try:
                message = source.typestore.deserialize_cdr(data, msgtype)
            except Exception as exc:  # the generated deserialisers raise whatever bad bytes cause
                self._report(BagProblem(source.path, f"corrupt {msgtype} message skipped "
                                                     f"({type(exc).__name__}: {exc})", topic, stamp_ns))
                continue
            yield BagMessage(topic, msgtype, stamp_ns, message)

    def _report(self, problem: BagProblem) -> None:
        self.problems.append(problem)
        log.warning("%s", problem)

    def close(self) -> None:
        for source in self._sources:
            source.close()
        self._sources = []

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def iter_messages(paths: str | Path | Iterable[str | Path], topics: Collection[str] | None = None, *,
                  deserialize: bool = False, problems: list[BagProblem] | None = None) -> Iterator[BagMessage]:
    """(topic, msgtype, stamp_ns, data) of every message in time order; see BagReader.

    Opening errors (no such bag, not a bag) raise BagError at once; damage found while
    reading is appended to `problems` (and logged) and reading goes on.
    """
    reader = BagReader(paths, problems)

    def generate() -> Iterator[BagMessage]:
        with reader:
            yield from reader.messages(topics, deserialize=deserialize)
    return generate()
