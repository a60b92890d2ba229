"""The rosbags typestore: ROS 2 Jazzy types plus the project's drivestack_msgs.

Bags are written and read with `rosbags`' pure-Python CDR (de)serialisers, so neither
needs the rosidl-built drivestack_msgs package: the definitions come straight from
`drivestack_msgs/msg/*.msg`.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rosbags.interfaces import MessageDefinitionFormat
from rosbags.typesys import Stores, TypesysError, get_typestore, get_types_from_idl, get_types_from_msg
from rosbags.typesys.store import Typestore

MSG_DIR = Path(__file__).parent / "drivestack_msgs" / "msg"
_IDL_SEPARATOR = "=" * 80 + "\n"


@functools.cache
def _drivestack_types() -> dict:
    types: dict = {}
    for path in sorted(MSG_DIR.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"drivestack_msgs/msg/{path.stem}"))
    return types


@functools.cache
def typestore() -> Typestore:
    """ROS2_JAZZY plus every drivestack_msgs message (shared: do not register into it)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    # All at once: messages refer to each other (Detection2DArray -> Detection2D -> ...).
    store.register(_drivestack_types())
    return store


@dataclass(frozen=True)
class TypeDefinition:
    """A message type as a bag stores it (a connection's msgdef)."""

    msgtype: str
    format: MessageDefinitionFormat
    text: str


def _parse(definition: TypeDefinition) -> dict:
    if definition.format == MessageDefinitionFormat.MSG:
        return get_types_from_msg(definition.text, definition.msgtype)
    types: dict = {}
    if definition.text.startswith(_IDL_SEPARATOR + "IDL: "):
        for part in definition.text.split(_IDL_SEPARATOR)[1:]:
            types.update(get_types_from_idl(part.split("\n", 1)[1]))
    else:
        types.update(get_types_from_idl(definition.text))
    return types


def typestore_for(definitions: Iterable[TypeDefinition]) -> tuple[Typestore, dict[str, str]]:
    """A typestore that can deserialise a (possibly foreign) bag.

    Returns the shared `typestore()` when it knows every type as the bag defines it,
    else a new one where the bag's own definitions win over drivestack_msgs (a bag
    written by an older version of this project carries the definitions its data was
    serialised with). The second value maps each msgtype still unusable to the reason.
    """
    shared = typestore()
    wanted = {d.msgtype: d for d in definitions}
    problems: dict[str, str] = {}
    bag_types: dict = {}
    for name, definition in wanted.items():
        if definition.format == MessageDefinitionFormat.NONE or not definition.text.strip():
            if name not in shared.fielddefs:
                problems[name] = "unknown message type (the bag has no definition for it)"
            continue
        if name in shared.fielddefs and not name.startswith("drivestack_msgs/"):
            continue  # standard types: the store's own definition
        try:
            bag_types.update(_parse(definition))
        except Exception as exc:  # rosbags' parsers raise several unrelated types
            if name not in shared.fielddefs:
                problems[name] = f"cannot parse the bag's definition: {exc}"
    new_types = {k: v for k, v in bag_types.items()
                 if k not in shared.fielddefs or _fields(v) != _fields(shared.fielddefs[k])}
    if not new_types:
        return shared, problems
    store = get_typestore(Stores.ROS2_JAZZY)
    ours = {k: v for k, v in _drivestack_types().items() if k not in new_types}
    try:
        store.register({**ours, **new_types})
    except TypesysError:
        # One conflicting definition must not cost the others: register one by one.
        store.register(ours)
        for name, fields in new_types.items():
            try:
                store.register({name: fields})
            except TypesysError as exc:
                problems.setdefault(name, str(exc))
    for name in wanted:
        if name not in store.fielddefs:
            problems.setdefault(name, "unknown message type")
    return store, problems


def _fields(typedef: tuple) -> list:
    return [(name.lower(), desc) for name, desc in typedef[1]]


def leading_stamp(msgtype: str, store: Typestore | None = None) -> bool:
    """Whether a message's CDR starts with a time stamp: std_msgs/Header first, or Clock."""
    fields = (store or typestore()).fielddefs.get(msgtype)
    if msgtype == "rosgraph_msgs/msg/Clock":
        return True
    if not fields or not fields[1]:
        return False
    _, (_, type_name) = fields[1][0]
    return type_name == "std_msgs/msg/Header"


def cdr_stamp_ns(cdr: bytes | memoryview) -> int:
    """The leading stamp (int32 sec, uint32 nanosec after the 4-byte encapsulation
    header) of a message for which `leading_stamp` holds, without deserialising it."""
    if len(cdr) < 12:
        return 0
    sec, nanosec = struct.unpack_from("<iI" if cdr[1] & 1 else ">iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec
