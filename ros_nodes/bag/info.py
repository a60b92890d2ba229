"""`bag_info`: what a bag holds (any rosbag2 bag, MCAP or sqlite3), and its table.

Per-topic rates need each topic's first and last time: MCAP gives them from its
message indexes and sqlite3 from one aggregate query, so no message is read.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ros_nodes.bag.errors import BagError
from ros_nodes.bag.layout import BagFiles, locate
from ros_nodes.bag.contents import Span, read_mcap


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int
    first_ns: int | None
    last_ns: int | None

    @property
    def rate_hz(self) -> float | None:
        if self.count < 2 or self.first_ns is None or self.last_ns is None or self.last_ns <= self.first_ns:
            return None
        return (self.count - 1) / ((self.last_ns - self.first_ns) / 1e9)


@dataclass(frozen=True)
class BagInfo:
    path: Path
    storage: str  # "mcap" | "sqlite3"
    files: list[Path]
    size_bytes: int
    complete: bool  # closed by its writer; False: run `drivestack bag recover`
    message_count: int
    start_ns: int | None
    end_ns: int | None
    topics: list[TopicInfo]
    custom_data: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return 0.0 if self.start_ns is None or self.end_ns is None else (self.end_ns - self.start_ns) / 1e9

    def to_json(self) -> dict:
        return {"path": str(self.path), "storage": self.storage, "files": [f.name for f in self.files],
                "size_bytes": self.size_bytes, "complete": self.complete, "message_count": self.message_count,
                "start_ns": self.start_ns, "end_ns": self.end_ns, "duration_s": self.duration_s,
                "topics": [{"name": t.name, "type": t.msgtype, "count": t.count, "rate_hz": t.rate_hz,
                            "first_ns": t.first_ns, "last_ns": t.last_ns} for t in self.topics],
                "custom_data": self.custom_data, "problems": self.problems}


def bag_info(path: str | Path) -> BagInfo:
    bag = locate(path)
    topics, custom, complete, problems = (_mcap_topics if bag.storage == "mcap" else _sqlite_topics)(bag)
    if bag.metadata is not None:
        custom = {str(k): str(v) for k, v in (bag.metadata.get("custom_data") or {}).items()}
    topic_infos = [TopicInfo(name, msgtype, span.count, span.first_ns if span.count else None,
                             span.last_ns if span.count else None)
                   for (name, msgtype), span in sorted(topics.items())]
    counted = [t for t in topic_infos if t.count]
    return BagInfo(
        path=bag.path, storage=bag.storage, files=bag.files, size_bytes=sum(f.stat().st_size for f in bag.files),
        complete=complete and (bag.metadata is not None or bag.path.is_file()),
        message_count=sum(t.count for t in topic_infos),
        start_ns=min((t.first_ns for t in counted), default=None),  # type: ignore[type-var]
        end_ns=max((t.last_ns for t in counted), default=None),  # type: ignore[type-var]
        topics=topic_infos, custom_data=custom, problems=problems)


_Topics = dict[tuple[str, str], Span]


def _mcap_topics(bag: BagFiles) -> tuple[_Topics, dict[str, str], bool, list[str]]:
    topics: _Topics = defaultdict(Span)
    custom: dict[str, str] = {}
    complete, problems = True, []
    for path in bag.files:
        contents = read_mcap(path, spans=True)
        complete &= contents.complete
        problems += [str(p) for p in contents.problems]
        for cid, channel in contents.channels.items():
            schema = contents.schemas.get(channel.schema_id)
            topics[(channel.topic, schema.name if schema else "?")].merge((contents.spans or {}).get(cid, Span()))
        custom.update(contents.custom_metadata())
    return topics, custom, complete, problems


def _sqlite_topics(bag: BagFiles) -> tuple[_Topics, dict[str, str], bool, list[str]]:
    if bag.compression_mode:
        raise BagError(f"{bag.path}: compressed sqlite3 bags ({bag.compression_mode} mode) are not supported here")
    topics: _Topics = defaultdict(Span)
    for path in bag.files:
        try:
            db = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
            try:
                names = {tid: (name, msgtype) for tid, name, msgtype in db.execute("SELECT id, name, type FROM topics")}
                rows = db.execute("SELECT topic_id, COUNT(*), MIN(timestamp), MAX(timestamp) FROM messages "
                                  "GROUP BY topic_id").fetchall()
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            raise BagError(f"{path} is not a readable rosbag2 sqlite3 file: {exc}") from None
        for key in names.values():
            topics.setdefault(key, Span())  # topics without messages are listed too
        for tid, count, first, last in rows:
            if tid in names:
                topics[names[tid]].merge(Span(count, first, last))
    return topics, {}, True, []


def _time(stamp_ns: int | None) -> str:
    if stamp_ns is None:
        return "-"
    seconds = stamp_ns / 1e9
    if seconds > 1e9:  # wall-clock time (after 2001), not simulation time
        return f"{seconds:.3f} s ({datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec='milliseconds')})"
    return f"{seconds:.3f} s"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError


def info_renderables(info: BagInfo) -> list:
    """rich renderables: a summary grid, the topic table, then any problems."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    repair = "drivestack bag recover" if info.storage == "mcap" else "ros2 bag reindex"
    state = "complete" if info.complete else f"[yellow]incomplete: the writer did not finish ({repair})[/]"
    for label, value in (("bag", str(info.path)), ("storage", f"{info.storage}, {len(info.files)} file(s), "
                                                              f"{_size(info.size_bytes)}, {state}"),
                         ("duration", f"{info.duration_s:.3f} s"), ("start", _time(info.start_ns)),
                         ("end", _time(info.end_ns)), ("messages", str(info.message_count))):
        grid.add_row(label, value)
    for key, value in sorted(info.custom_data.items()):
        grid.add_row(f"  {key}", Text(value))
    table = Table(title="topics")
    table.add_column("topic", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("rate (Hz)", justify="right")
    for topic in info.topics:
        table.add_row(topic.name, topic.msgtype, str(topic.count),
                      "-" if topic.rate_hz is None else f"{topic.rate_hz:.2f}")
    problems = [Text(f"problem: {p}", style="yellow") for p in info.problems]
    return [grid, table, *problems]
