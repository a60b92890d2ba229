"""The launcher: a subset of the ROS 2 YAML launch format, run on plain subprocesses.

There is no ``launch``/``launch_ros`` on PyPI, so this reads the part of the real format
the project needs (``arg``, ``let``, ``node`` with ``param``/``remap``, ``$(var ...)``
and the boolean substitutions ``$(equals ...)``, ``$(if ...)``, ...) and starts each
node as ``python -m <module> --ros-args ...``, exactly the command line ``launch_ros``
would build. Parsing and command building are pure; ``run_launch``
supervises the processes the way ``ros2 launch`` does (SIGINT, then SIGTERM after
``sigterm_timeout``, then SIGKILL after ``sigkill_timeout``), with one difference: a
node that exits non-zero always brings the whole graph down.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import math
import os
import pkgutil
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, Union

import yaml

logger = logging.getLogger(__name__)

Scalar = Union[bool, int, float, str]
ParameterValue = Union[Scalar, tuple[Scalar, ...]]

NODE_PACKAGE = "drivestack"
NODE_MODULES = "ros_nodes"
MODULE_PREFIX = "module:"
FAILED = 1
DEFAULT_SIGTERM_TIMEOUT_S = 5.0  # ros2 launch's defaults
DEFAULT_SIGKILL_TIMEOUT_S = 5.0

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_TRUE, _FALSE = ("true", "True", "1"), ("false", "False", "0")
_SCALAR_TYPES = {"str": str, "bool": bool, "int": int, "float": float}
_LIST_TYPES = {f"list_of_{name}": kind for name, kind in _SCALAR_TYPES.items()}
_NODE_KEYS = frozenset({"pkg", "exec", "name", "namespace", "args", "ros_args", "param", "remap", "env", "output",
                        "on_exit", "required", "sigterm_timeout", "sigkill_timeout", "if", "unless"})
_OUTPUTS = ("log", "screen", "both")


class LaunchError(Exception):
    """A launch file or launch argument the launcher cannot use; the message is one line."""


@dataclass(frozen=True)
class Parameter:
    name: str
    value: ParameterValue


@dataclass(frozen=True)
class ParameterFile:
    path: Path


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph, every substitution done."""
    exec: str
    module: str
    name: str | None = None
    namespace: str = ""                       # "" or absolute, e.g. "/carla"
    parameters: tuple[Parameter | ParameterFile, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()           # before --ros-args
    ros_arguments: tuple[str, ...] = ()       # appended after the generated ROS arguments
    env: tuple[tuple[str, str], ...] = ()
    output: str = "log"                       # ROS 2's default: stderr on screen, stdout dropped
    required: bool = False                    # on_exit: shutdown
    sigterm_timeout_s: float | None = None
    sigkill_timeout_s: float | None = None

    @property
    def label(self) -> str:
        """The name its log lines are prefixed with."""
        name = self.name or self.exec.removeprefix(MODULE_PREFIX).rsplit(".", 1)[-1]
        return f"{self.namespace.strip('/')}/{name}" if self.namespace else name


@dataclass(frozen=True)
class LaunchDescription:
    path: Path
    arguments: Mapping[str, str]              # declared args with their final values
    nodes: tuple[NodeSpec, ...]


# --- parsing -----------------------------------------------------------------------------------------------


def parse_launch_arguments(tokens: Sequence[str]) -> dict[str, str]:
    """``["scenario:=town", ...]`` (the ``ros2 launch`` command-line form) -> ``{"scenario": "town"}``."""
    overrides = {}
    for token in tokens:
        name, sep, value = token.partition(":=")
        if not sep or not _NAME.fullmatch(name):
            raise LaunchError(f"launch arguments are NAME:=VALUE, got {token!r}")
        overrides[name] = value
    return overrides


def load_launch(path: Path | str, overrides: Mapping[str, str] | None = None) -> LaunchDescription:
    """Read and check a launch file; every error is raised here, before anything starts."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise LaunchError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise LaunchError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(document, dict) or set(document) != {"launch"} or not isinstance(document["launch"], list):
        raise LaunchError(f"{path}: expected a top-level 'launch:' list")
    return _Parser(path, dict(overrides or {})).parse(document["launch"])


class _Parser:
    def __init__(self, path: Path, overrides: dict[str, str]) -> None:
        self.path = path
        self.overrides = overrides
        self.variables: dict[str, str] = {}
        self.declared: dict[str, str] = {}

    def parse(self, actions: list[Any]) -> LaunchDescription:
        nodes: list[NodeSpec] = []
        for index, action in enumerate(actions):
            where = f"{self.path}: launch[{index}]"
            if not isinstance(action, dict) or len(action) != 1:
                raise LaunchError(f"{where}: each entry is one of arg:, let:, node:")
            kind, body = next(iter(action.items()))
            if kind not in ("arg", "let", "node"):
                raise LaunchError(f"{where}: unsupported action {kind!r} (supported: arg, let, node)")
            body = self._mapping(body, f"{where} {kind}")
            if kind == "arg":
                self._arg(body, f"{where} arg")
            elif kind == "let":
                self._let(body, f"{where} let")
            elif (node := self._node(body, f"{where} node")) is not None:
                nodes.append(node)
        unknown = sorted(set(self.overrides) - set(self.declared))
        if unknown:
            raise LaunchError(f"{self.path}: unknown launch argument {unknown[0]!r} "
                              f"(declared: {', '.join(self.declared) or 'none'})")
        _check_unique(nodes, self.path)
        return LaunchDescription(self.path, dict(self.declared), tuple(nodes))

    def _arg(self, body: dict, where: str) -> None:
        _check_keys(body, {"name", "default", "description", "choice"}, where, required=("name",))
        name = body["name"]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise LaunchError(f"{where}: bad argument name {name!r}")
        if name in self.overrides:
            value = self.overrides[name]
        elif "default" in body:
            value = self._text(_scalar_text(body["default"], f"{where} {name}"), f"{where} {name}")
        else:
            raise LaunchError(f"{self.path}: launch argument {name!r} has no default: give {name}:=VALUE")
        choices = [self._mapping(c, where).get("value") for c in body.get("choice") or []]
        if choices and value not in [str(c) for c in choices]:
            raise LaunchError(f"{self.path}: launch argument {name}:={value} is not one of "
                              f"{', '.join(map(str, choices))}")
        self.declared[name] = self.variables[name] = value

    def _let(self, body: dict, where: str) -> None:
        _check_keys(body, {"name", "value"}, where, required=("name", "value"))
        name = self._text(body["name"], where)
        self.variables[name] = self._text(_scalar_text(body["value"], where), f"{where} {name}")

    def _node(self, body: dict, where: str) -> NodeSpec | None:
        _check_keys(body, _NODE_KEYS, where, required=("exec",))
        if isinstance(body.get("name"), str):
            where = f"{self.path}: node {body['name']!r}"
        if not self._condition(body, where):
            return None
        package = self._text(body.get("pkg", NODE_PACKAGE), where)
        if package != NODE_PACKAGE:
            raise LaunchError(f"{where}: unknown pkg {package!r} (this launcher starts {NODE_PACKAGE} nodes)")
        executable = self._text(body["exec"], where)
        name = self._text(body["name"], where) if "name" in body else None
        if name is not None and not _NAME.fullmatch(name):
            raise LaunchError(f"{where}: bad node name {name!r} (letters, digits and _)")
        sigterm, sigkill = (self._seconds(body, key, where) for key in ("sigterm_timeout", "sigkill_timeout"))
        return NodeSpec(
            exec=executable, module=_resolve_module(executable, where), name=name,
            namespace=self._namespace(body.get("namespace", ""), where),
            parameters=tuple(self._parameters(body.get("param") or [], "", where)),
            remappings=tuple(self._remappings(body.get("remap") or [], where)),
            arguments=tuple(shlex.split(self._text(body.get("args", ""), where))),
            ros_arguments=tuple(shlex.split(self._text(body.get("ros_args", ""), where))),
            env=tuple(self._env(body.get("env") or [], where)),
            output=self._choice(body.get("output", "log"), _OUTPUTS, f"{where} output"),
            required=self._required(body, where), sigterm_timeout_s=sigterm, sigkill_timeout_s=sigkill)

    def _condition(self, body: dict, where: str) -> bool:
        keep = True
        for key, wanted in (("if", True), ("unless", False)):
            if key in body:
                keep = keep and self._bool(body[key], f"{where} {key}") == wanted
        return keep

    def _required(self, body: dict, where: str) -> bool:
        # `on_exit: shutdown` is the real ROS 2 key; `required` is ROS 1's spelling, kept as an alias.
        on_exit = self._text(body["on_exit"], where) if "on_exit" in body else None
        if on_exit not in (None, "shutdown"):
            raise LaunchError(f"{where}: on_exit supports only 'shutdown', got {on_exit!r}")
        return on_exit == "shutdown" or self._bool(body.get("required", False), f"{where} required")

    def _parameters(self, entries: Any, prefix: str, where: str) -> list[Parameter | ParameterFile]:
        parameters: list[Parameter | ParameterFile] = []
        for entry in self._list(entries, f"{where} param"):
            entry = self._mapping(entry, f"{where} param")
            if "from" in entry:
                _check_keys(entry, {"from"}, f"{where} param")
                parameters.append(ParameterFile(self._existing_file(entry["from"], where)))
                continue
            _check_keys(entry, {"name", "value", "type", "param"}, f"{where} param", required=("name",))
            name = prefix + self._text(entry["name"], f"{where} param")
            if not _PARAMETER_NAME.fullmatch(name):
                raise LaunchError(f"{where}: bad parameter name {name!r}")
            if "param" in entry:  # nested parameters: names joined with '.', as ROS 2 does
                if "value" in entry or "type" in entry:
                    raise LaunchError(f"{where}: parameter {name!r} has both nested params and a value")
                parameters += self._parameters(entry["param"], name + ".", where)
            elif "value" not in entry:
                raise LaunchError(f"{where}: parameter {name!r} has no value")
            else:
                value = self._parameter_value(entry["value"], entry.get("type"), f"{where} parameter {name!r}")
                parameters.append(Parameter(name, value))
        return parameters

    def _parameter_value(self, raw: Any, type_name: Any, where: str) -> ParameterValue:
        if type_name is not None and type_name not in _SCALAR_TYPES and type_name not in _LIST_TYPES:
            raise LaunchError(f"{where}: unknown type {type_name!r} "
                              f"(one of {', '.join([*_SCALAR_TYPES, *_LIST_TYPES])})")
        if isinstance(raw, list):
            if type_name in _SCALAR_TYPES:
                raise LaunchError(f"{where}: a list value needs a list_of_* type, not {type_name!r}")
            kind = _LIST_TYPES.get(type_name)
            return _uniform_list([self._evaluate(item, kind, where) for item in raw], where)
        if type_name in _LIST_TYPES:
            values = self._evaluate(raw, None, where)
            if not isinstance(values, list):
                raise LaunchError(f"{where}: expected a list for type {type_name}")
            return _uniform_list([_coerce(v, _LIST_TYPES[type_name], where) for v in values], where)
        value = self._evaluate(raw, _SCALAR_TYPES.get(type_name), where)
        if isinstance(value, list):
            return _uniform_list(value, where)
        return value

    def _evaluate(self, raw: Any, kind: type | None, where: str) -> Any:
        """Strings are substituted then read as YAML, like launch_ros does (``type: str`` keeps the text)."""
        if isinstance(raw, str):
            text = self._text(raw, where)
            if kind is str:
                return text
            try:
                raw = yaml.safe_load(text) if text else ""
            except yaml.YAMLError:
                raise LaunchError(f"{where}: cannot read {text!r} as a value (add type: str)") from None
            if isinstance(raw, list):
                return raw if kind is None else [_coerce(v, kind, where) for v in raw]
        return _coerce(raw, kind, where)

    def _remappings(self, entries: Any, where: str) -> list[tuple[str, str]]:
        remappings = []
        for entry in self._list(entries, f"{where} remap"):
            entry = self._mapping(entry, f"{where} remap")
            _check_keys(entry, {"from", "to"}, f"{where} remap", required=("from", "to"))
            source, target = (self._text(entry[key], f"{where} remap") for key in ("from", "to"))
            if not source or not target or any(c.isspace() for c in source + target):
                raise LaunchError(f"{where}: bad remap {source!r} -> {target!r}")
            remappings.append((source, target))
        return remappings

    def _env(self, entries: Any, where: str) -> list[tuple[str, str]]:
        pairs = []
        for entry in self._list(entries, f"{where} env"):
            entry = self._mapping(entry, f"{where} env")
            _check_keys(entry, {"name", "value"}, f"{where} env", required=("name", "value"))
            pairs.append((self._text(entry["name"], where), self._text(_scalar_text(entry["value"], where), where)))
        return pairs

    def _namespace(self, raw: Any, where: str) -> str:
        namespace = self._text(raw, where).strip("/")
        if namespace and not all(_NAME.fullmatch(part) for part in namespace.split("/")):
            raise LaunchError(f"{where}: bad namespace {namespace!r}")
        return f"/{namespace}" if namespace else ""

    def _existing_file(self, raw: Any, where: str) -> Path:
        path = Path(self._text(raw, where)).expanduser()
        if not path.is_file():
            raise LaunchError(f"{where}: parameter file {str(path)!r} does not exist")
        return path.resolve()

    def _seconds(self, body: dict, key: str, where: str) -> float | None:
        if key not in body:
            return None
        raw = body[key]
        try:
            seconds = float(self._text(raw, where) if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            seconds = -1.0
        if not seconds >= 0 or isinstance(raw, bool):
            raise LaunchError(f"{where}: {key} must be a number of seconds >= 0, got {raw!r}")
        return seconds

    def _bool(self, raw: Any, where: str) -> bool:
        text = self._text(raw, where) if isinstance(raw, str) else raw
        if text is True or text in _TRUE:
            return True
        if text is False or text in _FALSE:
            return False
        raise LaunchError(f"{where}: expected true or false, got {raw!r}")

    def _choice(self, raw: Any, choices: tuple[str, ...], where: str) -> str:
        value = self._text(raw, where)
        if value not in choices:
            raise LaunchError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    def _text(self, raw: Any, where: str) -> str:
        """A string attribute with its substitutions done (inner ones first: a value is
        never read again as a substitution)."""
        if not isinstance(raw, str):
            raise LaunchError(f"{where}: expected a string, got {raw!r}")
        return "".join(part if isinstance(part, str) else self._substitute(part, where)
                       for part in _parse_substitutions(raw))

    def _substitute(self, call: _Call, where: str) -> str:
        kind = call.arguments[0] if call.arguments and isinstance(call.arguments[0], str) else ""
        rest = [self._argument(argument, where) for argument in call.arguments[1:]]
        expression = f"{kind} {' '.join(rest)}".strip()
        if kind in _BOOLEAN_SUBSTITUTIONS and len(rest) in _BOOLEAN_SUBSTITUTIONS[kind]:
            return self._boolean(kind, rest, where)
        if kind == "var" and len(rest) == 1:
            if rest[0] not in self.variables:
                raise LaunchError(f"{where}: $(var {rest[0]}) is not defined by an arg or let above it")
            return self.variables[rest[0]]
        if kind == "env" and len(rest) in (1, 2):
            value = os.environ.get(rest[0], rest[1] if len(rest) == 2 else None)
            if value is None:
                raise LaunchError(f"{where}: environment variable {rest[0]} is not set (or give a default)")
            return value
        if kind == "dirname" and not rest:
            return str(self.path.resolve().parent)
        raise LaunchError(f"{where}: unsupported substitution $({expression}) "
                          "(supported: $(var NAME), $(env NAME [DEFAULT]), $(dirname), $(equals A B), "
                          "$(not-equals A B), $(not X), $(and X Y), $(or X Y), $(if COND THEN [ELSE]))")

    def _argument(self, argument: str | _Call | list, where: str) -> str:
        if isinstance(argument, str):
            return argument
        if isinstance(argument, _Call):
            return self._substitute(argument, where)
        return "".join(self._argument(part, where) for part in argument)

    def _boolean(self, kind: str, values: list[str], where: str) -> str:
        """ROS 2's boolean substitutions: "true" or "false" (``if`` returns a branch)."""
        if kind in ("equals", "not-equals"):
            same = _comparable(values[0]) == _comparable(values[1])
            return _scalar_text(same == (kind == "equals"), where)
        if kind == "if":
            return values[1] if self._bool(values[0], f"{where} $(if)") else (values[2] if len(values) > 2 else "")
        truth = [self._bool(v, f"{where} $({kind})") for v in values]
        return _scalar_text({"not": lambda: not truth[0], "and": lambda: all(truth), "or": lambda: any(truth)}[kind](),
                            where)

    def _mapping(self, raw: Any, where: str) -> dict:
        if not isinstance(raw, dict):
            raise LaunchError(f"{where}: expected a mapping, got {raw!r}")
        return raw

    def _list(self, raw: Any, where: str) -> list:
        if not isinstance(raw, list):
            raise LaunchError(f"{where}: expected a list, got {raw!r}")
        return raw


# name -> the argument counts it takes (ROS 2 Jazzy's launch.substitutions of these names).
_BOOLEAN_SUBSTITUTIONS = {"equals": (2,), "not-equals": (2,), "not": (1,), "and": (2,), "or": (2,), "if": (2, 3)}


@dataclass(frozen=True)
class _Call:
    """``$(kind arg ...)``: each argument is text or a list of text and nested calls."""

    arguments: tuple


def _parse_substitutions(text: str) -> list[str | _Call]:
    """Text and ``$(...)`` calls, nested ones inside their arguments. Arguments split at
    whitespace; quotes group (``''`` is an empty argument). An unclosed ``$(`` is text."""
    parts: list[str | _Call] = []
    position = 0
    while (start := text.find("$(", position)) >= 0:
        call, end = _parse_call(text, start + 2)
        if call is None:
            break
        parts += [text[position:start], call]
        position = end
    parts.append(text[position:])
    return [part for part in parts if part != ""]


def _parse_call(text: str, position: int) -> tuple[_Call | None, int]:
    """The call whose arguments start at ``position``, and the index after its ``)``."""
    arguments: list = []
    current: list = []
    started = False  # an argument is open (so that '' counts as one)
    quote = ""
    while position < len(text):
        char = text[position]
        if quote:
            if char == quote:
                quote = ""
            else:
                current.append(char)
            position += 1
        elif char in "'\"":
            quote, started = char, True
            position += 1
        elif text.startswith("$(", position):
            inner, position = _parse_call(text, position + 2)
            if inner is None:
                return None, position
            current.append(inner)
            started = True
        elif char == ")" or char.isspace():
            if started:
                arguments.append(_joined(current))
            current, started = [], False
            position += 1
            if char == ")":
                return _Call(tuple(arguments)), position
        else:
            current.append(char)
            started = True
            position += 1
    return None, position


def _joined(parts: list) -> str | list:
    """An argument's characters as one string, or text and calls in order."""
    merged: list = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    if not merged:
        return ""
    return merged[0] if len(merged) == 1 and isinstance(merged[0], str) else merged


def _comparable(value: str) -> object:
    """As ``$(equals)`` compares: booleans and numbers by value, else the text."""
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    try:
        return float(value)
    except ValueError:
        return value


def _check_keys(body: dict, allowed: set[str] | frozenset[str], where: str, required: tuple[str, ...] = ()) -> None:
    unknown = sorted(map(str, set(body) - set(allowed)))
    if unknown:
        raise LaunchError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    missing = [key for key in required if key not in body]
    if missing:
        raise LaunchError(f"{where}: missing key {missing[0]!r}")


def _scalar_text(raw: Any, where: str) -> str:
    """An arg default or let value written as a YAML scalar (``default: 5``), as text."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (int, float, str)):
        return str(raw)
    raise LaunchError(f"{where}: expected a string, number or boolean, got {raw!r}")


def _coerce(value: Any, kind: type | None, where: str) -> Scalar:
    if type(value) not in (bool, int, float, str):
        raise LaunchError(f"{where}: {value!r} is not a bool, int, float, string or list of one of those "
                          "(add type: str for text)")
    if kind is None or type(value) is kind:
        return value
    if kind is float and type(value) is int:
        return float(value)
    if kind is str:
        return _scalar_text(value, where)
    raise LaunchError(f"{where}: {value!r} is not of type {kind.__name__}")


def _uniform_list(values: list[Any], where: str) -> tuple[Scalar, ...]:
    # rcl cannot type an empty or mixed sequence; launch_ros refuses them for the same reason.
    values = [_coerce(v, None, where) for v in values]
    if not values or len({type(v) for v in values}) != 1:
        raise LaunchError(f"{where}: a list parameter needs at least one item, all of one type")
    return tuple(values)


def _resolve_module(executable: str, where: str) -> str:
    if executable.startswith(MODULE_PREFIX):
        module = executable.removeprefix(MODULE_PREFIX)
    else:
        module = f"{NODE_MODULES}.{executable}_node"
    try:
        found = _NAME.fullmatch(module.replace(".", "_")) and importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return module
    if executable.startswith(MODULE_PREFIX):
        raise LaunchError(f"{where}: no Python module {module!r}")
    raise LaunchError(f"{where}: unknown exec {executable!r} (drivestack nodes: {', '.join(_known_nodes()) or 'none'};"
                      f" or exec: {MODULE_PREFIX}<python.module>)")


def _known_nodes() -> list[str]:
    package = importlib.util.find_spec(NODE_MODULES)
    locations = package.submodule_search_locations if package else None
    return sorted(m.name.removesuffix("_node") for m in pkgutil.iter_modules(locations or [])
                  if m.name.endswith("_node"))


def _check_unique(nodes: list[NodeSpec], path: Path) -> None:
    seen: set[str] = set()
    for node in nodes:
        if node.label in seen:
            raise LaunchError(f"{path}: two nodes named {node.label!r}")
        seen.add(node.label)


# --- command lines -----------------------------------------------------------------------------------------


def node_command(spec: NodeSpec) -> list[str]:
    """The process's argv: what ``ros2 run`` would get, with ``python -m`` as the executable."""
    command = [sys.executable, "-m", spec.module, *spec.arguments, "--ros-args"]
    if spec.name:
        command += ["-r", f"__node:={spec.name}"]
    if spec.namespace:
        command += ["-r", f"__ns:={spec.namespace}"]
    for parameter in spec.parameters:
        if isinstance(parameter, ParameterFile):
            command += ["--params-file", str(parameter.path)]
        else:
            command += ["-p", f"{parameter.name}:={ros_value_text(parameter.value)}"]
    for source, target in spec.remappings:
        command += ["-r", f"{source}:={target}"]
    return command + list(spec.ros_arguments)


def ros_value_text(value: ParameterValue) -> str:
    """A value as rcl's YAML parameter parser reads it back with the same type.

    Strings are always quoted so that '123' or 'true' stay strings; floats always carry a
    '.' or exponent so that 2.0 stays a double.
    """
    if isinstance(value, tuple):
        return "[" + ", ".join(ros_value_text(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    return "'" + value.replace("'", "''") + "'"


# --- supervision -------------------------------------------------------------------------------------------


_ESCALATION = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
_PR_SET_PDEATHSIG = 1
_REAPED_WAIT_S = 5.0


@dataclass
class _Child:
    spec: NodeSpec
    process: subprocess.Popen
    readers: list[threading.Thread] = field(default_factory=list)
    stage: int = -1                   # index in _ESCALATION of the last signal sent
    deadline: float = math.inf        # when to escalate (monotonic seconds)


class _Signals:
    """SIGINT/SIGTERM to the launcher: counted, so a second Ctrl-C can hurry the shutdown."""

    def __init__(self) -> None:
        self.count = 0
        self.name = ""
        self.wake = threading.Event()

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        self.name = signal.Signals(signum).name
        self.wake.set()

    def wait(self, timeout_s: float) -> None:
        self.wake.wait(timeout_s)
        self.wake.clear()


class _Lines:
    """Whole lines to the launcher's streams, one writer at a time."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout, self.stderr = stdout, stderr
        self._lock = threading.Lock()

    def write(self, stream: TextIO, line: str) -> None:
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed terminal or pipe must not block the children
                pass


def run_launch(description: LaunchDescription, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
               sigterm_timeout_s: float = DEFAULT_SIGTERM_TIMEOUT_S,
               sigkill_timeout_s: float = DEFAULT_SIGKILL_TIMEOUT_S, poll_interval_s: float = 0.05) -> int:
    """Run the graph until a required node exits, a node fails, or SIGINT/SIGTERM; 0 when it ended normally.

    Node timeouts (``sigterm_timeout``/``sigkill_timeout`` in the file) override the defaults
    given here. Every child is gone when this returns, whatever happened.
    """
    lines = _Lines(stdout or sys.stdout, stderr or sys.stderr)
    signals = _Signals()
    previous = _install_handlers(signals)
    children: list[_Child] = []
    try:
        exit_code = _start_all(description.nodes, children, lines)
        if exit_code is None:
            exit_code = _supervise(children, signals, lines, poll_interval_s)
        _shut_down(children, signals, sigterm_timeout_s, sigkill_timeout_s, poll_interval_s)
        return exit_code
    finally:
        for child in children:  # anything still alive (an exception above) or left behind by a node
            _signal_group(child, signal.SIGKILL)
            _reap(child)
        _restore_handlers(previous)
        for child in children:
            for reader in child.readers:
                reader.join(timeout=1.0)


def _start_all(nodes: Sequence[NodeSpec], children: list[_Child], lines: _Lines) -> int | None:
    hook = _die_with_parent_hook()
    for spec in nodes:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(spec.env)}
        try:
            process = subprocess.Popen(
                node_command(spec), stdin=subprocess.DEVNULL, env=env, start_new_session=True, preexec_fn=hook,
                stdout=subprocess.DEVNULL if spec.output == "log" else subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            lines.write(lines.stderr, f"error: cannot start node '{spec.label}': {exc.strerror or exc}")
            return FAILED
        children.append(_Child(spec, process))
        logger.info("started '%s' (pid %d)", spec.label, process.pid)
    # Readers start only once every child is forked: preexec_fn is not safe while other threads run.
    for child in children:
        pipes = [(child.process.stdout, lines.stdout), (child.process.stderr, lines.stderr)]
        for pipe, stream in pipes:
            if pipe is not None:
                reader = threading.Thread(target=_forward, args=(pipe, child.spec.label, stream, lines),
                                          name=f"launch-{child.spec.label}", daemon=True)
                reader.start()
                child.readers.append(reader)
    return None


def _forward(pipe: Any, label: str, stream: TextIO, lines: _Lines) -> None:
    with pipe:
        for raw in iter(pipe.readline, b""):
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.write(stream, f"[{label}] {text}")


def _supervise(children: list[_Child], signals: _Signals, lines: _Lines, poll_interval_s: float) -> int:
    while True:
        if signals.count:
            logger.info("%s: shutting down", signals.name)
            return 0
        for child in children:
            if child.process.returncode is not None or child.process.poll() is None:
                continue
            code = child.process.returncode
            if code != 0:
                lines.write(lines.stderr, f"error: node '{child.spec.label}' {_exit_text(code)}")
                return FAILED
            if child.spec.required:
                logger.info("required node '%s' finished: shutting down", child.spec.label)
                return 0
            logger.info("'%s' finished", child.spec.label)
        if all(child.process.returncode is not None for child in children):
            return 0
        signals.wait(poll_interval_s)


def _shut_down(children: list[_Child], signals: _Signals, sigterm_timeout_s: float, sigkill_timeout_s: float,
               poll_interval_s: float) -> None:
    """SIGINT every node, then SIGTERM and SIGKILL to those that outlive their timeouts."""
    handled = signals.count
    while running := [c for c in children if c.process.poll() is None and c.stage < len(_ESCALATION)]:
        hurry = signals.count > handled  # another Ctrl-C: skip the rest of the current grace period
        handled = signals.count
        now = time.monotonic()
        for child in running:
            if child.stage < 0 or hurry or now >= child.deadline:
                _escalate(child, sigterm_timeout_s, sigkill_timeout_s)
        signals.wait(poll_interval_s)
    for child in children:
        if child.process.returncode is not None and child.stage >= 0:
            logger.info("'%s' %s", child.spec.label, _exit_text(child.process.returncode))


def _escalate(child: _Child, sigterm_timeout_s: float, sigkill_timeout_s: float) -> None:
    child.stage += 1
    if child.stage >= len(_ESCALATION):
        logger.error("'%s' (pid %d) survived SIGKILL; giving up on it", child.spec.label, child.process.pid)
        return
    sent = _ESCALATION[child.stage]
    if child.stage > 0:
        logger.warning("'%s' still running after %s: sending %s", child.spec.label,
                       _ESCALATION[child.stage - 1].name, sent.name)
    _signal_group(child, sent)
    grace = {signal.SIGINT: _or(child.spec.sigterm_timeout_s, sigterm_timeout_s),
             signal.SIGTERM: _or(child.spec.sigkill_timeout_s, sigkill_timeout_s)}.get(sent, _REAPED_WAIT_S)
    child.deadline = time.monotonic() + grace


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _signal_group(child: _Child, sent: signal.Signals) -> None:
    # The node leads its own session (start_new_session), so its group is its pid; the group also
    # reaches anything the node started itself.
    try:
        os.killpg(child.process.pid, sent)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(child: _Child) -> None:
    try:
        child.process.wait(timeout=_REAPED_WAIT_S)
    except subprocess.TimeoutExpired:
        logger.error("'%s' (pid %d) did not exit after SIGKILL", child.spec.label, child.process.pid)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"exited with code {code} (killed by {signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"exited with code {code}"


def _install_handlers(signals: _Signals) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}  # signal handlers can only be set from the main thread; the caller owns signals then
    return {sig: signal.signal(sig, signals) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _die_with_parent_hook() -> Callable[[], None] | None:
    """Linux: children get SIGTERM if the launcher itself dies (even by SIGKILL), so none is orphaned."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the hook runs between fork and exec
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return hook
