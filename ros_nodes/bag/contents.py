"""What an MCAP file holds, read with the `mcap` package: from its summary when its writer
closed it, else by walking its records from the start up to where the file is torn.

`mcap`'s readers stop at the first damage (a torn tail, a chunk failing its CRC, a
broken record inside a chunk) by raising; here each becomes a `BagProblem` and costs
only what it touches: `Walk` ends at the last complete top-level record (where
`recover_bag` cuts) and `chunk_records` keeps a chunk's records up to a broken one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import yaml
from mcap.exceptions import EndOfFile
from mcap.reader import SeekingReader
from mcap.records import (Channel, Chunk, ChunkIndex, DataEnd, Header, McapRecord, Message, MessageIndex, Metadata,
                          Schema)
from mcap.stream_reader import MAGIC_SIZE, CRCValidationError, StreamReader, get_chunk_data_stream
from mcap.summary import Summary
from mcap.writer import MCAP0_MAGIC

from ros_nodes.bag.errors import BagError, BagProblem

# Metadata records: rosbag2's own (metadata.yaml's text, written on close) and ours (the
# bag's custom metadata, written on open and on every update, so a crash keeps it).
ROSBAG2_METADATA = "rosbag2"
DRIVESTACK_METADATA = "drivestack"


@dataclass
class Span:
    """Messages of one channel: count and first/last log time."""

    count: int = 0
    first_ns: int = 2**64 - 1
    last_ns: int = 0

    def add(self, stamp_ns: int) -> None:
        self.count += 1
        self.first_ns = min(self.first_ns, stamp_ns)
        self.last_ns = max(self.last_ns, stamp_ns)

    def merge(self, other: Span) -> None:
        self.count += other.count
        self.first_ns = min(self.first_ns, other.first_ns)
        self.last_ns = max(self.last_ns, other.last_ns)


@dataclass(frozen=True)
class ChunkRef:
    """Where a chunk is and what it holds (from its chunk index, or from a scan)."""

    offset: int
    start_ns: int
    end_ns: int
    channel_ids: frozenset[int] | None  # None: unknown (no message indexes)


@dataclass
class McapContents:
    path: Path
    complete: bool  # a valid footer: the writer closed the file
    header: Header
    schemas: dict[int, Schema] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    chunks: list[ChunkRef] = field(default_factory=list)  # in file order
    loose_messages: list[tuple[int, int]] = field(default_factory=list)  # outside chunks: (log time, offset)
    metadata: list[Metadata] = field(default_factory=list)  # in file order
    spans: dict[int, Span] | None = None  # per channel id; None: not computed
    problems: list[BagProblem] = field(default_factory=list)
    # Scans only: the end of the last complete record of the data section, and the chunks
    # before it that could not be read whole (failing their CRC, say; already reported).
    valid_end: int = 0
    damaged_chunks: set[int] = field(default_factory=set)  # their offsets
    compression: str = ""  # of the first chunk

    def topic(self, channel_id: int) -> str:
        channel = self.channels.get(channel_id)
        return channel.topic if channel else f"<channel {channel_id}>"

    def custom_metadata(self) -> dict[str, str]:
        """The bag's custom metadata: rosbag2's record (a closed file) under ours."""
        merged: dict[str, str] = {}
        for record in self.metadata:
            if record.name == ROSBAG2_METADATA and record.metadata.get("serialized_metadata"):
                try:
                    merged.update(yaml.safe_load(record.metadata["serialized_metadata"]).get("custom_data") or {})
                except (yaml.YAMLError, AttributeError):
                    pass  # a foreign writer's text; the custom data is optional
        for record in self.metadata:
            if record.name == DRIVESTACK_METADATA:
                merged.update(record.metadata)
        return {str(k): str(v) for k, v in merged.items()}


def chunk_records(chunk: Chunk, offset: int) -> tuple[list[McapRecord], bool, str | None]:
    """(records, whether they pass the CRC, why the rest is unreadable) of the chunk at
    byte `offset`: its records up to the first broken one."""
    try:
        try:
            stream, size = get_chunk_data_stream(chunk, validate_crc=True)
            crc_ok = True
        except CRCValidationError:
            stream, size = get_chunk_data_stream(chunk)
            crc_ok = False
        data = BytesIO(stream.read(size))
    except Exception as exc:  # each codec raises its own types
        return [], True, f"chunk at byte {offset} does not decompress ({type(exc).__name__}: {exc})"
    records: list[McapRecord] = []
    reader = StreamReader(data, skip_magic=True, record_size_limit=size).records
    while data.tell() < size:
        try:
            records.append(next(reader))
        except Exception as exc:  # mcap's parsers raise McapError, struct.error, UnicodeDecodeError ...
            what = "it ends inside a record" if isinstance(exc, EndOfFile) else f"{type(exc).__name__}: {exc}"
            return records, crc_ok, f"unreadable record in the chunk at byte {offset} ({what})"
    return records, crc_ok, None


def read_chunk(f: BinaryIO, offset: int) -> Chunk:
    """The chunk record at `offset` (raises if there is none)."""
    f.seek(offset)
    record = next(StreamReader(f, skip_magic=True, emit_chunks=True).records)
    if not isinstance(record, Chunk):
        raise BagError(f"no chunk at byte {offset} where the index says one is")
    return record


class Walk:
    """Top-level records of an MCAP file in file order, (start offset, record), up to its
    DataEnd record or to the first record the file ends inside (then `error` says why)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.valid_end, self.error = f, MAGIC_SIZE, None

    def __iter__(self) -> Iterator[tuple[int, McapRecord]]:
        self.f.seek(0)
        records = StreamReader(self.f, emit_chunks=True).records
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except Exception as exc:  # see chunk_records
                self.error = exc
                return
            start, self.valid_end = self.valid_end, self.f.tell()
            yield start, record
            if isinstance(record, DataEnd):
                return  # the summary follows, if the writer got that far


def _open(path: Path) -> tuple[BinaryIO, SeekingReader, Header]:
    """The file, a reader for it and its header; BagError if it does not start like MCAP."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise BagError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if f.read(MAGIC_SIZE) != MCAP0_MAGIC:
            raise BagError("it does not start with MCAP's magic bytes")
        f.seek(0)
        reader = SeekingReader(f)
        return f, reader, reader.get_header()
    except Exception as exc:  # noqa: BLE001 (see chunk_records)
        f.close()
        why = "it ends inside its header" if isinstance(exc, (EndOfFile, struct.error)) else exc
        raise BagError(f"{path} is not a readable MCAP file: {why}") from None


def _summary(f: BinaryIO, reader: SeekingReader) -> tuple[Summary | None, bool]:
    """(summary, whether the file ends with a valid footer)."""
    size = f.seek(0, 2)
    f.seek(max(0, size - MAGIC_SIZE))
    if size < 2 * MAGIC_SIZE or f.read() != MCAP0_MAGIC:
        return None, False
    try:
        return reader.get_summary(), True
    except Exception:  # noqa: BLE001 a torn or corrupt footer or summary: the data still counts
        return None, False


def read_mcap(path: Path, *, spans: bool = False) -> McapContents:
    """The file's contents from its summary, or from a scan if it has none.

    `spans=True` also counts messages per channel with first/last log time (from the
    message indexes when the file has them: no message is read).
    """
    f, reader, header = _open(path)
    with f:
        summary, complete = _summary(f, reader)
        if summary is None or not summary.channels or (
                summary.statistics and summary.statistics.message_count and not summary.chunk_indexes):
            contents = _scan(f, path, header)  # also a closed file whose summary lacks the index
            contents.complete = complete
            return contents
        chunks = sorted(summary.chunk_indexes, key=lambda c: c.chunk_start_offset)
        contents = McapContents(path, True, header, dict(summary.schemas), dict(summary.channels),
                                [ChunkRef(c.chunk_start_offset, c.message_start_time, c.message_end_time,
                                          frozenset(c.message_index_offsets) or None) for c in chunks])
        try:
            contents.metadata = list(reader.iter_metadata())
        except Exception as exc:  # noqa: BLE001 (see chunk_records)
            contents.problems.append(BagProblem(path, f"metadata unreadable ({type(exc).__name__}: {exc})"))
        if spans:
            contents.spans = _spans_from_indexes(f, contents, chunks)
        return contents


def scan_mcap(path: Path) -> McapContents:
    """Walk every record of the data section (what `recover_bag` works from)."""
    f, _, header = _open(path)
    with f:
        return _scan(f, path, header)


def _spans_from_indexes(f: BinaryIO, contents: McapContents, chunks: list[ChunkIndex]) -> dict[int, Span]:
    spans: dict[int, Span] = {}
    for chunk in chunks:
        chunk_spans = _index_spans(f, chunk) if chunk.message_index_offsets else None
        if chunk_spans is None:  # no message indexes, or unreadable ones: count the messages
            chunk_spans, offset = {}, chunk.chunk_start_offset
            try:
                records, _, problem = chunk_records(read_chunk(f, offset), offset)
            except Exception as exc:  # noqa: BLE001 (see chunk_records)
                records, problem = [], f"chunk at byte {offset} unreadable ({type(exc).__name__}: {exc})"
            if problem:
                contents.problems.append(BagProblem(contents.path, problem))
            for record in records:
                if isinstance(record, Message):
                    chunk_spans.setdefault(record.channel_id, Span()).add(record.log_time)
        for cid, span in chunk_spans.items():
            spans.setdefault(cid, Span()).merge(span)
    return spans


def _index_spans(f: BinaryIO, chunk: ChunkIndex) -> dict[int, Span] | None:
    f.seek(chunk.chunk_start_offset + chunk.chunk_length)
    raw = BytesIO(f.read(chunk.message_index_length))
    spans: dict[int, Span] = {}
    try:
        for record in StreamReader(raw, skip_magic=True, record_size_limit=chunk.message_index_length).records:
            if isinstance(record, MessageIndex):
                span = spans.setdefault(record.channel_id, Span())
                for stamp_ns, _ in record.records:
                    span.add(stamp_ns)
            if raw.tell() == chunk.message_index_length:
                break
    except Exception:  # noqa: BLE001 (see chunk_records)
        return None
    return spans if spans.keys() == chunk.message_index_offsets.keys() else None


def _scan(f: BinaryIO, path: Path, header: Header) -> McapContents:
    contents = McapContents(path, False, header, spans={})
    walk = Walk(f)
    for offset, record in walk:
        if isinstance(record, Schema):
            contents.schemas[record.id] = record
        elif isinstance(record, Channel):
            contents.channels[record.id] = record
        elif isinstance(record, Metadata):
            contents.metadata.append(record)
        elif isinstance(record, Message):
            contents.loose_messages.append((record.log_time, offset))
            contents.spans.setdefault(record.channel_id, Span()).add(record.log_time)  # type: ignore[union-attr]
        elif isinstance(record, Chunk):
            _scan_chunk(contents, offset, record)
    contents.valid_end = walk.valid_end
    if walk.error is not None:
        at, size = f.tell(), f.seek(0, 2)
        why = "the file ends inside it" if isinstance(walk.error, EndOfFile) or at >= size else \
            f"{type(walk.error).__name__}: {walk.error}"
        contents.problems.append(BagProblem(
            path, f"no complete record at byte {walk.valid_end} ({why}): the last {size - walk.valid_end} bytes "
                  "are unreadable (the writer did not finish)"))
    return contents


def _scan_chunk(contents: McapContents, offset: int, chunk: Chunk) -> None:
    if not contents.chunks:
        contents.compression = chunk.compression
    records, crc_ok, problem = chunk_records(chunk, offset)
    spans: dict[int, Span] = {}
    for record in records:
        if isinstance(record, Message):
            spans.setdefault(record.channel_id, Span()).add(record.log_time)
        elif isinstance(record, Schema):
            contents.schemas[record.id] = record
        elif isinstance(record, Channel):
            contents.channels[record.id] = record
    contents.chunks.append(ChunkRef(offset, chunk.message_start_time, chunk.message_end_time, frozenset(spans)))
    assert contents.spans is not None
    for cid, span in spans.items():
        contents.spans.setdefault(cid, Span()).merge(span)
    what = [f"{problem}; the rest of this chunk is skipped"] if problem else []
    if not crc_ok:
        what.append(f"chunk at byte {offset} fails its CRC check: its messages are unverified")
    if what:
        contents.damaged_chunks.add(offset)
        topics = ", ".join(sorted({contents.topic(c) for c in spans})) or "topics unknown"
        for text in what:
            contents.problems.append(BagProblem(contents.path, f"{text} (log times {chunk.message_start_time}.."
                                                               f"{chunk.message_end_time} ns; {topics})"))
