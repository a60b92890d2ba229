"""`recover_bag`: make a bag whose writer died (kill -9, power cut) whole again.

Such a bag has an .mcap without summary or footer, its last chunk perhaps torn, and no
metadata.yaml. `mcap`'s StreamReader walks the file up to the first record it ends
inside; every complete record before that (schemas, channels, chunks, metadata) is
written anew with `mcap`'s Writer, one chunk per original chunk, into a file that then
replaces the original. The bytes after the last complete record go verbatim into a side
file first (`<file>.torn-tail-from-byte-<N>`: the original is its first N bytes, whose
every record is in the repaired file, then that side file). If a record before the tear
cannot be carried over whole (a chunk failing its CRC), the original is kept entire
beside it instead (`<file>.before-recover`). So nothing is ever lost, and a recovery
that is itself interrupted can simply be run again.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mcap.records import Attachment, Channel, Chunk, McapRecord, Message, Metadata, Schema
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter

from ros_nodes.bag.contents import McapContents, Span, Walk, chunk_records, read_mcap, scan_mcap
from ros_nodes.bag.errors import BagError, BagProblem

_COMPRESSION = {"": CompressionType.NONE, "zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryReport:
    bag: Path
    files: list[Path]
    was_complete: bool  # nothing to repair (at most metadata.yaml was missing)
    messages_per_topic: dict[str, int]
    bytes_kept: int
    bytes_dropped: int  # torn records: unreadable, but kept in `backups`
    backups: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def message_count(self) -> int:
        return sum(self.messages_per_topic.values())


def recover_bag(path: str | Path) -> RecoveryReport:
    """Repair the bag directory (or single .mcap file) at `path` in place; see module doc."""
    path = Path(path)
    files = _mcap_files(path)
    results = [_recover_file(f) for f in files]
    was_complete = all(not changed for _, changed, _, _ in results)
    bag_dir = path if path.is_dir() else None
    backups = [b for _, _, _, b in results if b is not None]
    contents = [c for c, _, _, _ in results]
    metadata = _custom_metadata(contents)
    if bag_dir is not None and (not was_complete or not (bag_dir / "metadata.yaml").exists()):
        if not was_complete:
            metadata["recovered"] = "true"
        old = _write_metadata_yaml(bag_dir, contents, metadata)
        if old is not None:
            backups.append(old)
    counts: dict[str, int] = defaultdict(int)
    for c in contents:
        for cid, span in (c.spans or {}).items():
            counts[c.topic(cid)] += span.count
    report = RecoveryReport(
        bag=path, files=files, was_complete=was_complete, messages_per_topic=dict(counts),
        bytes_kept=sum(f.stat().st_size for f in files), bytes_dropped=sum(d for _, _, d, _ in results),
        backups=backups, problems=[str(p) for c in contents for p in c.problems], metadata=metadata)
    log.info("recovered %s: %d messages kept, %d bytes dropped", path, report.message_count, report.bytes_dropped)
    return report


def _mcap_files(path: Path) -> list[Path]:
    if not path.exists():
        raise BagError(f"no bag at {path}")
    if path.is_file():
        if path.suffix != ".mcap":
            raise BagError(f"{path} is not an .mcap file (only MCAP bags can be recovered)")
        return [path]
    files = sorted(path.glob("*.mcap"))
    if not files:
        if any(path.glob("*.db3")):
            raise BagError(f"{path} is a sqlite3 bag: sqlite3 is transactional and needs no recovery "
                           "(`ros2 bag reindex` rebuilds a missing metadata.yaml)")
        raise BagError(f"{path} holds no .mcap file: not an MCAP bag")
    return files


def _recover_file(path: Path) -> tuple[McapContents, bool, int, Path | None]:
    """(contents, whether the file changed, bytes dropped, backup of the original bytes)."""
    contents = read_mcap(path, spans=True)
    if contents.complete:
        return contents, False, 0, None
    scanned = scan_mcap(path)
    size = path.stat().st_size
    repaired = path.with_name(f"{path.name}.recovering")
    try:
        written, left_out = _rewrite(path, scanned, repaired)
    except BaseException:
        repaired.unlink(missing_ok=True)
        raise
    if left_out:  # records before the tear that could not be carried over: keep all
        backup = _unused(path.with_name(f"{path.name}.before-recover"))
        _keep_copy(path, backup)
        scanned.problems.append(BagProblem(path, f"{', '.join(left_out)} left out of the repaired file; the "
                                                 f"original is kept whole in {backup.name}"))
    else:
        backup = _save_tail(path, scanned.valid_end) if scanned.valid_end < size else None
    check = read_mcap(repaired, spans=True)
    kept = sum(s.count for s in (check.spans or {}).values())
    if not check.complete or kept != written:
        repaired.unlink()
        raise BagError(f"recovering {path} failed: the rewritten file {repaired} does not read back "
                       f"({kept} of {written} messages); {path} is unchanged")
    repaired.replace(path)
    check.path = path
    check.problems = scanned.problems
    return check, True, size - scanned.valid_end, backup


def _rewrite(src: Path, scanned: McapContents, dst: Path) -> tuple[int, list[str]]:
    """Copy every complete record of `src` before its tear into a new MCAP file `dst`
    with `mcap`'s Writer (one chunk per original chunk); returns the messages written
    and what could not be carried over."""
    schema_ids: dict[int, int] = {}
    channel_ids: dict[int, int] = {}  # old id -> new id (mcap's Writer numbers them itself)
    written, undeclared, damaged = 0, 0, 0
    with src.open("rb") as f, dst.open("wb") as out:
        writer = McapWriter(out, chunk_size=1 << 62, compression=_COMPRESSION.get(scanned.compression,
                                                                                  CompressionType.ZSTD))
        writer.start(scanned.header.profile, scanned.header.library)

        def add(record: McapRecord) -> int:
            if isinstance(record, Schema) and record.id not in schema_ids:
                schema_ids[record.id] = writer.register_schema(record.name, record.encoding, record.data)
            elif isinstance(record, Channel) and record.id not in channel_ids:
                channel_ids[record.id] = writer.register_channel(record.topic, record.message_encoding,
                                                                 schema_ids.get(record.schema_id, 0), record.metadata)
            elif isinstance(record, Message):
                if record.channel_id not in channel_ids:
                    nonlocal undeclared
                    undeclared += 1
                    return 0
                writer.add_message(channel_ids[record.channel_id], record.log_time, record.data,
                                   record.publish_time, record.sequence)
                return 1
            return 0

        for offset, record in Walk(f):
            if isinstance(record, Chunk):
                records, crc_ok, problem = chunk_records(record, offset)
                if crc_ok and not problem:
                    written += sum(add(r) for r in records)
                    writer.flush()  # the original's chunk boundaries
                else:  # only the definitions: unverified messages stay in the backup
                    damaged += 1
                    for r in records:
                        if isinstance(r, (Schema, Channel)):
                            add(r)
            elif isinstance(record, Metadata):
                writer.add_metadata(record.name, record.metadata)
            elif isinstance(record, Attachment):
                writer.add_attachment(record.create_time, record.log_time, record.name, record.media_type,
                                      record.data)
            else:
                written += add(record)
        writer.finish()
        out.flush()
        os.fsync(out.fileno())
    left_out = [f"{damaged} damaged chunk(s)"] if damaged else []
    if undeclared:
        left_out.append(f"{undeclared} message(s) of channels the file never declares")
    return written, left_out


def _save_tail(path: Path, cut: int) -> Path:
    backup = _unused(path.with_name(f"{path.name}.torn-tail-from-byte-{cut}"))
    with path.open("rb") as src, backup.open("xb") as dst:
        src.seek(cut)
        shutil.copyfileobj(src, dst, 1 << 24)
        dst.flush()
        os.fsync(dst.fileno())  # on disk before the original is replaced
    return backup


def _keep_copy(path: Path, backup: Path) -> None:
    try:
        os.link(path, backup)  # the original's inode survives the replace
    except OSError:
        shutil.copyfile(path, backup)
        with backup.open("rb+") as f:
            os.fsync(f.fileno())


def _custom_metadata(contents: list[McapContents]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for c in contents:
        merged.update(c.custom_metadata())
    return merged


def _write_metadata_yaml(bag_dir: Path, contents: list[McapContents], custom: dict[str, str]) -> Path | None:
    """rosbag2 metadata (version 9) for the repaired files; returns where the old one went."""
    topics: dict[tuple[str, str], dict] = {}
    files, everything = [], Span()
    for c in contents:
        spans = {cid: s for cid, s in (c.spans or {}).items() if s.count}
        in_file = Span()
        for span in spans.values():
            in_file.merge(span)
        for cid, channel in sorted(c.channels.items()):
            schema = c.schemas.get(channel.schema_id)
            msgtype = schema.name if schema else ""
            entry = topics.setdefault((channel.topic, msgtype), {"topic_metadata": {
                "name": channel.topic, "type": msgtype, "serialization_format": channel.message_encoding,
                "offered_qos_profiles": _qos(channel.metadata.get("offered_qos_profiles", "")),
                "type_description_hash": channel.metadata.get("topic_type_hash", "")}, "message_count": 0})
            entry["message_count"] += spans[cid].count if cid in spans else 0
        if in_file.count:
            everything.merge(in_file)
        else:
            in_file.first_ns = in_file.last_ns = 0
        files.append({"path": c.path.name, "starting_time": {"nanoseconds_since_epoch": in_file.first_ns},
                      "duration": {"nanoseconds": in_file.last_ns - in_file.first_ns},
                      "message_count": in_file.count})
    start_ns, end_ns = (everything.first_ns, everything.last_ns) if everything.count else (0, 0)
    metadata = {"rosbag2_bagfile_information": {
        "version": 9, "storage_identifier": "mcap", "relative_file_paths": [c.path.name for c in contents],
        "duration": {"nanoseconds": end_ns - start_ns}, "starting_time": {"nanoseconds_since_epoch": start_ns},
        "message_count": everything.count, "topics_with_message_count": list(topics.values()),
        "compression_format": "", "compression_mode": "", "files": files, "custom_data": custom or None,
        "ros_distro": "rosbags"}}
    target = bag_dir / "metadata.yaml"
    old = None
    if target.exists():
        old = _unused(bag_dir / "metadata.yaml.before-recover")
        target.rename(old)
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(metadata, sort_keys=False))
    tmp.replace(target)
    return old


def _qos(text: str) -> list | str:
    try:
        parsed = yaml.safe_load(text) if text else []
    except yaml.YAMLError:
        return text
    return parsed if isinstance(parsed, list) else text


def _unused(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}.{n}"), n + 1
    return candidate
