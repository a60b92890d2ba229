"""Build the project's ROS 2 interface package ``drivestack_msgs`` and install it.

    python -m ros_nodes.build_msgs [--prefix PREFIX] [--force] [--jobs N]

``ros_nodes/drivestack_msgs`` is a plain ament_cmake interface package. This builds it
with cmake against ROS 2 installed from PyPI (the ``msgs-build`` extra) and installs it
into PREFIX, by default this interpreter's environment (``sys.prefix``, the venv), where
the ROS wheels live too: the Python package goes to site-packages, the libraries to
``PREFIX/lib`` (found at run time through the ROS wheels' ``.pth`` bootstrapper, which
puts ``sys.prefix/lib`` on the library path), the rest to ``share/`` and ``include/``.
Nothing needs sourcing, before or after.

Idempotent: when the installed package was built from exactly the current sources
(a hash of every file in ``ros_nodes/drivestack_msgs`` and of this script, stored in
the install), nothing is done; ``--force`` rebuilds. The build directory is
``build/drivestack_msgs`` (incremental; delete it for a clean build), its log
``build/drivestack_msgs/build.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

PACKAGE = "drivestack_msgs"
ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = ROOT / "ros_nodes" / PACKAGE
BUILD_DIR = ROOT / "build" / PACKAGE
LOG_TAIL_LINES = 60


class BuildError(Exception):
    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


def source_digest() -> str:
    """Hash of the package sources and of this script (what the install is built from)."""
    digest = hashlib.sha256()
    files = sorted((str(p.relative_to(SOURCE_DIR)), p) for p in SOURCE_DIR.rglob("*") if p.is_file())
    for name, path in [*files, ("<build_msgs.py>", Path(__file__))]:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(sys.version.encode())
    return digest.hexdigest()


def site_packages(prefix: Path) -> Path:
    """``PREFIX/lib/pythonX.Y/site-packages``: ament_cmake_python's PYTHON_INSTALL_DIR."""
    rel = sysconfig.get_path("purelib", vars={"base": "", "platbase": ""}).lstrip("/")
    return prefix / rel


def stamp_path(prefix: Path) -> Path:
    return prefix / "share" / PACKAGE / "drivestack_build_stamp"


def is_up_to_date(prefix: Path, digest: str) -> bool:
    stamp = stamp_path(prefix)
    installed = [
        stamp,
        site_packages(prefix) / PACKAGE / "msg" / "__init__.py",
        prefix / "lib" / f"lib{PACKAGE}__rosidl_generator_py.so",
        prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE,
    ]
    return all(p.exists() for p in installed) and stamp.read_text().strip() == digest


def check_toolchain(prefix: Path) -> str:
    # A cmake installed into the venv (pip install cmake) first, then the system's.
    cmake = shutil.which("cmake", path=str(Path(sys.executable).parent)) or shutil.which("cmake")
    if cmake is None:
        raise BuildError("cmake not found on PATH (install it: apt install cmake, or pip install cmake)")
    if shutil.which(os.environ.get("CC", "cc")) is None or shutil.which(os.environ.get("CXX", "c++")) is None:
        raise BuildError("no C/C++ compiler found (cc, c++): install one, e.g. apt install build-essential")
    roots = {prefix, Path(sys.prefix)}
    if not any((r / "share" / "rosidl_default_generators").is_dir() for r in roots):
        raise BuildError(
            "the ROS 2 build toolchain is not installed in this environment: "
            f"{sys.executable} -m pip install -e '.[msgs-build]'"
        )
    return cmake


def build_env(prefix: Path) -> dict[str, str]:
    """The ROS wheels' prefix as the only ament/CMake prefix (for the build only)."""
    roots = list(dict.fromkeys([str(prefix), sys.prefix]))
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(roots)
    env["CMAKE_PREFIX_PATH"] = os.pathsep.join(roots)
    return env


def run_step(name: str, cmd: list[str], env: dict[str, str], log) -> None:
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    result = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if result.returncode != 0:
        raise BuildError(f"{name} failed (exit code {result.returncode})")


def reset_stale_cache() -> None:
    """A build dir configured for another source tree (a copied checkout) is useless."""
    cache = BUILD_DIR / "CMakeCache.txt"
    if not cache.exists():
        return
    for line in cache.read_text(errors="replace").splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:"):
            if Path(line.split("=", 1)[1]).resolve() != SOURCE_DIR.resolve():
                shutil.rmtree(BUILD_DIR)
            return


def build(prefix: Path, jobs: int) -> None:
    cmake = check_toolchain(prefix)
    env = build_env(prefix)
    reset_stale_cache()
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    log_path = BUILD_DIR / "build.log"
    with open(log_path, "w") as log:
        try:
            run_step(
                "cmake configure",
                [
                    cmake,
                    "-S", str(SOURCE_DIR),
                    "-B", str(BUILD_DIR),
                    f"-DCMAKE_INSTALL_PREFIX={prefix}",
                    f"-DPython3_EXECUTABLE={sys.executable}",
                    "-DBUILD_TESTING=OFF",
                ],
                env,
                log,
            )
            run_step("cmake build", [cmake, "--build", str(BUILD_DIR), "--parallel", str(jobs)], env, log)
            run_step("cmake install", [cmake, "--install", str(BUILD_DIR)], env, log)
        except BuildError as err:
            log.flush()
            lines = log_path.read_text(errors="replace").splitlines()
            raise BuildError(f"{err} (full log: {log_path})", "\n".join(lines[-LOG_TAIL_LINES:])) from None


@contextlib.contextmanager
def build_lock():
    """Two `make` runs at once: the second waits, then finds the install up to date."""
    BUILD_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR.parent / f".{PACKAGE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ros_nodes.build_msgs",
        description=f"Build ros_nodes/{PACKAGE} with cmake and install it into a prefix (the venv).",
    )
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="install prefix (default: this interpreter's environment, %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the install is up to date")
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                        help="parallel build jobs (default: all cores, %(default)s)")
    args = parser.parse_args(argv)
    prefix = args.prefix.expanduser().absolute()

    start = time.perf_counter()
    with build_lock():
        digest = source_digest()
        if not args.force and is_up_to_date(prefix, digest):
            print(f"{PACKAGE}: up to date in {prefix} (--force to rebuild)")
            return 0
        stamp_path(prefix).unlink(missing_ok=True)  # a failed build leaves no stamp
        try:
            build(prefix, max(1, args.jobs))
        except BuildError as err:
            if err.log_tail:
                print(f"--- last {LOG_TAIL_LINES} lines of the cmake log ---", file=sys.stderr)
                print(err.log_tail, file=sys.stderr)
                print("---", file=sys.stderr)
            print(f"error: building {PACKAGE} failed: {err}", file=sys.stderr)
            return 1
        stamp_path(prefix).write_text(digest + "\n")
    print(f"{PACKAGE}: built and installed into {prefix} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
