# Two commands: `make run` and `make test`. Each sets up .venv on first use; the
# install is keyed on pyproject.toml and the drivestack_msgs build on its sources, so a
# second call installs and builds nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.drivestack-installed
PIP_STAMP := $(VENV)/.drivestack-pip-installed
# The project's ROS 2 interfaces, built with cmake and installed into the venv.
MSGS_SRC := ros_nodes/drivestack_msgs/msg $(wildcard ros_nodes/drivestack_msgs/msg/*.msg) \
            ros_nodes/drivestack_msgs/CMakeLists.txt ros_nodes/drivestack_msgs/package.xml \
            ros_nodes/build_msgs.py
OUT    ?= out/run
# loadscope: a test class (one ROS 2 graph fed in order by its tests) stays on one worker.
PYTEST_ARGS ?= -n 2 --dist loadscope

.PHONY: run test bench towns setup clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Open3D's import needs libusb-1.0 from the system (Debian's libusb-1.0-0).
SYSTEM_STAMP := $(VENV)/.drivestack-system-deps
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(SYSTEM_STAMP): | $(BIN)/python
	@ldconfig -p | grep -q 'libusb-1.0.so.0' || { $(SUDO) apt-get update -qq && \
	    $(SUDO) apt-get install -y -qq --no-install-recommends libusb-1.0-0; }
	touch $(SYSTEM_STAMP)

$(PIP_STAMP): pyproject.toml $(SYSTEM_STAMP) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,msgs-build]'
	touch $(PIP_STAMP)

# Set up = installed and drivestack_msgs built (editing a message rebuilds only that).
$(STAMP): $(PIP_STAMP) $(MSGS_SRC)
	$(BIN)/python -m ros_nodes.build_msgs
	touch $(STAMP)

# The full stack through ROS 2: bridge, mission, perception, LiDAR obstacles, the
# learned driving policy, planner (its safety supervisor over the policy's proposal),
# recorder. Each run gets its own folder (bags are never overwritten).
run: $(STAMP)
	$(eval RUN_DIR := $(OUT)/$(shell date +%Y%m%d-%H%M%S))
	$(BIN)/drivestack drive --ros --agent modular --mode policy+safety --scenario modular_demo --out $(RUN_DIR) --video $(RUN_DIR)/drive.mp4

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m sim.bench
	$(BIN)/python -m ros_nodes.bench
	$(BIN)/python -m models.bench
	$(BIN)/python -m perception.bench
	$(BIN)/python -m planning.bench
	$(BIN)/python -m models.bench_policy

towns: $(STAMP)
	$(BIN)/python -m sim.towns.generate_towns

clean:
	rm -rf $(VENV) out build *.egg-info
