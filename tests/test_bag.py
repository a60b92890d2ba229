"""rosbag2 bags: write -> info -> read back (also by `mcap`'s and rosbags' own readers),
metadata, crash recovery (truncated files, a damaged chunk, a writer killed with
SIGKILL), corrupt and foreign bags (sqlite3, rosbags' own MCAP, unknown types), and the
`drivestack bag` commands. Real files, real processes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapReader
from typer.testing import CliRunner

from drivestack.cli import app
from ros_nodes.bag.errors import BagError
from ros_nodes.bag.info import bag_info
from ros_nodes.bag.reader import iter_messages
from ros_nodes.bag.recover import recover_bag
from ros_nodes.bag.writer import BagWriter
from ros_nodes.typestore import typestore

TS = typestore()
T = TS.types
S = 1_000_000_000


def header(stamp_ns: int, frame: str = "base_link"):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=stamp_ns // S, nanosec=stamp_ns % S),
                                    frame_id=frame)


def cdr(msg: object, msgtype: str) -> bytes:
    return bytes(TS.serialize_cdr(msg, msgtype))


def image(stamp_ns: int, seed: int):
    pixels = np.random.default_rng(seed).integers(0, 255, 24 * 32 * 3, dtype=np.uint8)
    return T["sensor_msgs/msg/Image"](header=header(stamp_ns, "cam"), height=24, width=32, encoding="rgb8",
                                      is_bigendian=0, step=96, data=pixels)


def cloud(stamp_ns: int, seed: int):
    points = np.random.default_rng(seed).normal(size=(50, 4)).astype(np.float32)
    fields = [T["sensor_msgs/msg/PointField"](name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyzi")]
    return T["sensor_msgs/msg/PointCloud2"](header=header(stamp_ns, "lidar"), height=1, width=50, fields=fields,
                                            is_bigendian=False, point_step=16, row_step=800,
                                            data=points.view(np.uint8).ravel(), is_dense=True)


def clock(stamp_ns: int):
    return T["rosgraph_msgs/msg/Clock"](clock=T["builtin_interfaces/msg/Time"](sec=stamp_ns // S,
                                                                                nanosec=stamp_ns % S))


def control(stamp_ns: int, i: int):
    return T["drivestack_msgs/msg/VehicleControl"](header=header(stamp_ns), throttle=0.5, steer=-0.01 * i, brake=0.0,
                                                   hand_brake=False, reverse=False, gear=1, manual_gear_shift=False)


# topic, type, period, count, factory: 0.5 s of a drive
STREAMS = [("/camera", "sensor_msgs/msg/Image", S // 20, 10, image),
           ("/lidar", "sensor_msgs/msg/PointCloud2", S // 10, 5, cloud),
           ("/clock", "rosgraph_msgs/msg/Clock", S // 100, 50, lambda t, i: clock(t)),
           ("/control", "drivestack_msgs/msg/VehicleControl", S // 20, 10, control)]
T0 = 1_000 * S  # sim time of the first message


def drive_messages() -> list[tuple[str, str, int, bytes]]:
    """(topic, type, stamp, CDR) of every message, in time order."""
    rows = [(topic, msgtype, T0 + i * period, cdr(make(T0 + i * period, i), msgtype))
            for topic, msgtype, period, count, make in STREAMS for i in range(count)]
    return sorted(rows, key=lambda r: r[2])


def write_bag(path: Path, messages, metadata=None, **writer_options) -> Path:
    with BagWriter(path, metadata or {"scenario": "default", "seed": 7}, **writer_options) as bag:
        for topic, msgtype, *_ in STREAMS:
            bag.add_topic(topic, msgtype)
        for topic, _, stamp, data in messages:
            bag.write(topic, stamp, data)
    return path


@pytest.fixture(scope="module")
def messages():
    return drive_messages()


@pytest.fixture(scope="module")
def small_chunk_bag(tmp_path_factory, messages) -> Path:
    """A closed bag whose chunks are small, so cuts land in many different records."""
    return write_bag(tmp_path_factory.mktemp("bags") / "drive", messages, chunk_size_bytes=4000)


def test_write_info_read_back(tmp_path, messages):
    bag = write_bag(tmp_path / "drive", messages)
    info = bag_info(bag)
    assert info.storage == "mcap" and info.complete and not info.problems
    assert info.message_count == len(messages) == 75
    assert info.start_ns == T0 and info.duration_s == pytest.approx(0.49)
    by_name = {t.name: t for t in info.topics}
    for topic, msgtype, period, count, _ in STREAMS:
        assert (by_name[topic].msgtype, by_name[topic].count) == (msgtype, count)
        assert by_name[topic].rate_hz == pytest.approx(S / period)

    problems = []
    read = list(iter_messages(bag, problems=problems))
    assert [(m.topic, m.msgtype, m.stamp_ns, m.data) for m in read] == messages and not problems

    decoded = list(iter_messages(bag, topics=["/camera", "/control"], deserialize=True))
    assert len(decoded) == 20
    first_image = next(m.data for m in decoded if m.topic == "/camera")
    np.testing.assert_array_equal(first_image.data, image(T0, 0).data)
    assert [m.data.steer for m in decoded if m.topic == "/control"] == pytest.approx([-0.01 * i for i in range(10)])

    with AnyReader([bag]) as other:  # the reference reader agrees (summary, indexes, CRCs)
        assert sum(1 for _ in other.messages()) == 75
        assert {c.topic: c.msgcount for c in other.connections}["/clock"] == 50


@pytest.mark.parametrize("compression", ["", "zstd", "lz4"])
def test_mcap_and_rosbags_readers_read_our_bag(tmp_path, messages, compression):
    """The reference readers agree: Foxglove's `mcap` (summary, chunk CRCs, message
    indexes, metadata) and rosbags' AnyReader (the rosbag2 layer)."""
    bag = write_bag(tmp_path / "drive", messages, chunk_size_bytes=4000, compression=compression)
    with next(bag.glob("*.mcap")).open("rb") as f:
        reader = make_reader(f, validate_crcs=True)
        summary = reader.get_summary()
        assert reader.get_header().profile == "ros2"
        assert summary.statistics.message_count == 75 and len(summary.chunk_indexes) > 5
        assert {c.compression for c in summary.chunk_indexes} == {compression}
        read = [(channel.topic, schema.name, message.log_time, message.data)
                for schema, channel, message in reader.iter_messages()]
        assert read == messages
        assert {s.name: s.encoding for s in summary.schemas.values()}["drivestack_msgs/msg/VehicleControl"] == "ros2msg"
        channel = next(c for c in summary.channels.values() if c.topic == "/clock")
        assert channel.message_encoding == "cdr" and channel.metadata["topic_type_hash"].startswith("RIHS01_")
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}  # the last one of each name
        assert metadata["drivestack"]["scenario"] == "default"
        assert "custom_data" in metadata["rosbag2"]["serialized_metadata"]

    with AnyReader([bag]) as other:
        assert [(c.topic, t, d) for c, t, d in other.messages()] == [(m[0], m[2], m[3]) for m in messages]
        control = next(c for c in other.connections if c.topic == "/control")
        decoded = [other.deserialize(d, c.msgtype) for c, _, d in other.messages(connections=[control])]
        assert [m.steer for m in decoded] == pytest.approx([-0.01 * i for i in range(10)])


def test_metadata_round_trip(tmp_path, messages):
    bag = write_bag(tmp_path / "drive", messages[:3], {"scenario": "town_loop", "seed": 7, "weather": "rain"})
    custom = bag_info(bag).custom_data
    assert (custom["scenario"], custom["seed"], custom["weather"]) == ("town_loop", "7", "rain")
    assert custom["git_commit"] and custom["drivestack_version"]

    with BagWriter(tmp_path / "episode", {"scenario": "s"}) as writer:
        writer.add_topic("/clock", "rosgraph_msgs/msg/Clock")
        writer.update_metadata({"episode_result": {"driving_score": 0.75}})
        writer.close({"note": "closed cleanly"})
    custom = bag_info(tmp_path / "episode").custom_data
    assert json.loads(custom["episode_result"]) == {"driving_score": 0.75} and custom["note"] == "closed cleanly"

    with pytest.raises(BagError, match="exists already"):
        BagWriter(bag, {})


def _summary(bag: Path):
    with next(bag.glob("*.mcap")).open("rb") as f:
        return make_reader(f).get_summary()


def _chunk_ends(bag: Path) -> list[tuple[int, int, int]]:
    """(chunk start, chunk end, end of its message indexes) per chunk."""
    chunks = sorted(_summary(bag).chunk_indexes, key=lambda c: c.chunk_start_offset)
    return [(c.chunk_start_offset, c.chunk_start_offset + c.chunk_length,
             c.chunk_start_offset + c.chunk_length + c.message_index_length) for c in chunks]


@pytest.mark.parametrize("where", ["inside the first metadata", "inside a chunk", "right after a chunk",
                                   "inside message indexes", "after a complete chunk", "inside the summary"])
def test_truncated_bag_recovers_every_flushed_message(tmp_path, small_chunk_bag, messages, where):
    original = next(small_chunk_bag.glob("*.mcap")).read_bytes()
    chunks = _chunk_ends(small_chunk_bag)
    assert len(chunks) >= 5
    start, end, index_end = chunks[2]  # the third chunk record and its message indexes
    first_metadata = min(m.offset for m in _summary(small_chunk_bag).metadata_indexes)
    cut = {"inside the first metadata": first_metadata + 20, "inside a chunk": start + (end - start) // 2, "right after a chunk": end,
           "inside message indexes": end + 20, "after a complete chunk": index_end,
           "inside the summary": len(original) - 100}[where]
    bag = tmp_path / "crashed"
    bag.mkdir()
    mcap = bag / "crashed_0.mcap"
    mcap.write_bytes(original[:cut])  # what a kill -9 leaves: no footer, no metadata.yaml

    before = bag_info(bag)
    assert not before.complete  # and bag_info still reads it
    report = recover_bag(bag)

    # Expected: every message of the chunks wholly before the cut (rosbags' reader counts them).
    reference = McapReader(next(small_chunk_bag.glob("*.mcap")))
    reference.open()
    flushed = [c for c in reference.chunks if c.chunk_start_offset + c.chunk_length <= cut]
    expected_count = sum(sum(c.channel_count.values()) for c in flushed)
    reference.close()
    expected = messages[:expected_count]  # the writer got them in time order, so chunks hold runs
    assert report.message_count == expected_count
    assert [(m.topic, m.stamp_ns, m.data) for m in iter_messages(bag)] == [(t, s, d) for t, _, s, d in expected]
    if expected_count:
        with AnyReader([bag]) as other:
            assert sum(1 for _ in other.messages()) == expected_count
    info = bag_info(bag)
    assert info.complete and info.message_count == expected_count and not info.problems
    if where != "inside the first metadata":
        assert info.custom_data["scenario"] == "default" and info.custom_data["recovered"] == "true"

    # Nothing lost: the torn bytes are verbatim in the side file, every record before them
    # (messages, metadata) is in the repaired file.
    if report.backups:
        (backup,) = report.backups
        kept = int(backup.name.rsplit("-", 1)[1])
        assert original[kept:cut] == backup.read_bytes() and report.bytes_dropped == cut - kept
    else:
        kept = cut
    reader = make_reader(BytesIO(original))
    indexes = reader.get_summary().metadata_indexes
    before = [m for i, m in zip(indexes, reader.iter_metadata(), strict=True) if i.offset + i.length <= kept]
    with mcap.open("rb") as f:
        assert list(make_reader(f).iter_metadata()) == before
    assert recover_bag(bag).was_complete  # idempotent


def test_recovery_keeps_the_whole_original_when_a_chunk_before_the_tear_is_damaged(tmp_path, small_chunk_bag,
                                                                                    messages):
    original = next(small_chunk_bag.glob("*.mcap")).read_bytes()
    chunks = _chunk_ends(small_chunk_bag)
    crashed = bytearray(original[:chunks[4][1] + 10])  # torn inside the fifth chunk's message indexes
    start, end, _ = chunks[1]
    crashed[(start + end) // 2] ^= 0xFF  # a flipped bit in the second chunk: it fails its CRC
    bag = tmp_path / "crashed"
    bag.mkdir()
    mcap = bag / "crashed_0.mcap"
    mcap.write_bytes(bytes(crashed))

    report = recover_bag(bag)
    assert any("fails its CRC check" in p for p in report.problems)
    (backup,) = report.backups
    assert backup.name == "crashed_0.mcap.before-recover" and backup.read_bytes() == crashed
    reference = McapReader(next(small_chunk_bag.glob("*.mcap")))
    reference.open()
    counts = [sum(c.channel_count.values()) for c in sorted(reference.chunks, key=lambda c: c.chunk_start_offset)]
    reference.close()
    expected = messages[:counts[0]] + messages[sum(counts[:2]):sum(counts[:5])]  # all but the second chunk's
    assert [(m.topic, m.stamp_ns, m.data) for m in iter_messages(bag)] == [(t, s, d) for t, _, s, d in expected]
    info = bag_info(bag)
    assert info.complete and info.message_count == len(expected) and not info.problems


def test_recover_rewrites_only_a_missing_metadata_yaml(tmp_path, small_chunk_bag):
    bag = tmp_path / "closed"
    shutil.copytree(small_chunk_bag, bag)
    (bag / "metadata.yaml").unlink()  # killed between closing the .mcap and writing the yaml
    mcap = next(bag.glob("*.mcap"))
    before = mcap.read_bytes()
    report = recover_bag(bag)
    assert report.was_complete and report.message_count == 75 and not report.backups
    assert mcap.read_bytes() == before
    info = bag_info(bag)
    assert info.complete and info.custom_data["scenario"] == "default" and "recovered" not in info.custom_data


WRITER_SCRIPT = """
import sys, time
from ros_nodes.bag.writer import BagWriter
bag = BagWriter(sys.argv[1], {"scenario": "killed"})
bag.add_topic("/n", "std_msgs/msg/UInt32")
i = 0
while True:
    bag.write("/n", i * 10_000_000, b"\\x00\\x01\\x00\\x00" + i.to_bytes(4, "little"))
    print(i, time.monotonic(), flush=True)
    i += 1
    time.sleep(0.005)
"""


def test_writer_killed_with_sigkill_loses_at_most_the_last_second(tmp_path):
    bag = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(bag)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1])
    written: list[tuple[int, float]] = []
    try:
        while not written or written[-1][1] - written[0][1] < 1.5:
            index, at = proc.stdout.readline().split()
            written.append((int(index), float(at)))
    finally:
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    old = [i for i, at in written if at < killed_at - 1.0]
    report = recover_bag(bag)
    values = [m.data.data for m in iter_messages(bag, deserialize=True)]
    assert values[:len(old)] == old, "a message written more than 1 s before the kill is missing"
    assert values == list(range(len(values))) and report.metadata["scenario"] == "killed"


def _corrupt(path: Path, marker: bytes, offset: int, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(marker) + offset
    data[at:at + len(new)] = new
    path.write_bytes(bytes(data))


def test_corrupt_message_is_reported_with_topic_and_time_and_the_rest_is_read(tmp_path):
    bag = tmp_path / "corrupt"
    string = "std_msgs/msg/String"
    with BagWriter(bag, {}, chunk_size_bytes=300) as writer:
        writer.add_topic("/text", string)
        writer.add_topic("/clock", "rosgraph_msgs/msg/Clock")
        for i in range(20):
            writer.write("/text", i * S, cdr(T[string](data=f"msg-{i:03d}"), string))
            writer.write("/clock", i * S, cdr(clock(i * S), "rosgraph_msgs/msg/Clock"))
    # The string's length field (4 bytes before its text) now claims 2 GB.
    _corrupt(next(bag.glob("*.mcap")), b"msg-007", -4, b"\xff\xff\xff\x7f")

    problems = []
    texts = [m.data.data for m in iter_messages(bag, topics=["/text"], deserialize=True, problems=problems)]
    assert texts == [f"msg-{i:03d}" for i in range(20) if i != 7]
    bad = [p for p in problems if p.topic == "/text"]
    assert len(bad) == 1 and bad[0].stamp_ns == 7 * S and "corrupt std_msgs/msg/String" in str(bad[0])
    assert "/text at t=7.000000000 s" in str(bad[0])
    assert any("CRC" in p.what for p in problems)  # the chunk's checksum caught it too

    # A broken record length inside a chunk: the rest of that chunk is lost, not the bag.
    _corrupt(next(bag.glob("*.mcap")), b"msg-015", -4 - 8 - 22 - 4, b"\xff" * 8)
    problems = []
    stamps = [m.stamp_ns for m in iter_messages(bag, topics=["/clock"], problems=problems)]
    assert len(stamps) >= 17 and stamps[-1] == 19 * S
    assert any("rest of this chunk is skipped" in p.what for p in problems)


def _foreign_sqlite3_bag(path: Path, store) -> None:
    """What `ros2 bag record -s sqlite3` writes, types the project does not know included."""
    compressed = T["sensor_msgs/msg/CompressedImage"](header=header(0, "cam"), format="jpeg",
                                                      data=np.arange(100, dtype=np.uint8))
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        jpeg = writer.add_connection("/camera/compressed", "sensor_msgs/msg/CompressedImage", typestore=store)
        thing = writer.add_connection("/foreign", "foreign_msgs/msg/Thing", typestore=store)
        mystery = writer.add_connection("/mystery", "foreign_msgs/msg/Mystery", msgdef="", rihs01="RIHS01_" + "0" * 64)
        for i in range(10):
            writer.write(jpeg, i * S // 10 + 5, cdr(compressed, "sensor_msgs/msg/CompressedImage"))
            writer.write(thing, i * S // 5, bytes(store.serialize_cdr(store.types["foreign_msgs/msg/Thing"](
                count=i, label=f"t{i}"), "foreign_msgs/msg/Thing")))
            writer.write(mystery, i * S, b"\x00\x01\x00\x00\x07\x00\x00\x00")


def test_foreign_sqlite3_bag_reads_and_infos(tmp_path, messages):
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg("int32 count\nstring label", "foreign_msgs/msg/Thing"))
    foreign = tmp_path / "foreign"
    _foreign_sqlite3_bag(foreign, store)

    info = bag_info(foreign)
    assert info.storage == "sqlite3" and info.complete
    by_name = {t.name: t for t in info.topics}
    assert by_name["/camera/compressed"].count == 10 and by_name["/camera/compressed"].rate_hz == pytest.approx(10)
    assert by_name["/foreign"].msgtype == "foreign_msgs/msg/Thing"

    problems = []
    read = list(iter_messages(foreign, deserialize=True, problems=problems))
    assert [m.data.label for m in read if m.topic == "/foreign"] == [f"t{i}" for i in range(10)]
    assert [m.data.format for m in read if m.topic == "/camera/compressed"] == ["jpeg"] * 10
    assert not any(m.topic == "/mystery" for m in read)
    (unknown,) = problems
    assert unknown.topic == "/mystery" and "unknown message type" in unknown.what
    assert len(list(iter_messages(foreign))) == 30  # raw bytes need no type

    ours = write_bag(tmp_path / "ours", messages)  # two bags, one stream in time order
    merged = [m.stamp_ns for m in iter_messages([ours, foreign])]
    assert len(merged) == 105 and merged == sorted(merged)


def test_a_bag_of_an_older_message_definition_decodes_with_its_own(tmp_path):
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    old = get_typestore(Stores.ROS2_JAZZY)  # VehicleControl as an older drivestack had it
    old.register(get_types_from_msg("std_msgs/Header header\nfloat32 throttle", "drivestack_msgs/msg/VehicleControl"))
    with BagWriter(tmp_path / "old", {}) as writer:
        writer.add_topic("/control", "drivestack_msgs/msg/VehicleControl", typestore=old)
        msg = old.types["drivestack_msgs/msg/VehicleControl"](header=header(S), throttle=0.25)
        writer.write("/control", S, bytes(old.serialize_cdr(msg, "drivestack_msgs/msg/VehicleControl")))
    problems = []
    (read,) = iter_messages(tmp_path / "old", deserialize=True, problems=problems)
    assert read.data.throttle == 0.25 and not hasattr(read.data, "steer") and not problems


def test_bag_written_by_rosbags_mcap_writer_reads_infos_and_recovers(tmp_path, messages):
    bag = tmp_path / "theirs"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:  # schemas inside chunks, no CRC
        connections = {topic: writer.add_connection(topic, msgtype, typestore=TS) for topic, msgtype, *_ in STREAMS}
        for topic, _, stamp, data in messages:
            writer.write(connections[topic], stamp, data)
    assert bag_info(bag).message_count == 75
    assert [m.data for m in iter_messages(bag)] == [m[3] for m in messages]

    (bag / "metadata.yaml").unlink()
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:-50])  # torn footer: every message is still there
    report = recover_bag(bag)
    assert report.message_count == 75 and bag_info(bag).complete


def test_cli_bag_info_and_recover(tmp_path, small_chunk_bag):
    runner = CliRunner()
    result = runner.invoke(app, ["bag", "info", str(small_chunk_bag), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["message_count"] == 75 and payload["custom_data"]["scenario"] == "default"
    assert {t["name"]: t["rate_hz"] for t in payload["topics"]}["/clock"] == pytest.approx(100)

    table = runner.invoke(app, ["bag", "info", str(small_chunk_bag)])
    assert table.exit_code == 0 and "/lidar" in table.stdout and "10.00" in table.stdout

    crashed = tmp_path / "crashed"
    shutil.copytree(small_chunk_bag, crashed)
    (crashed / "metadata.yaml").unlink()
    mcap = next(crashed.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:_chunk_ends(small_chunk_bag)[3][1] + 7])
    result = runner.invoke(app, ["bag", "recover", str(crashed)])
    assert result.exit_code == 0, result.output
    assert "recovered" in result.stdout and "torn-tail-from-byte" in result.stdout

    missing = runner.invoke(app, ["bag", "info", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "error: no bag at" in missing.stderr
