# i2v: `just demo` runs one picture through the whole pipeline; `just test` runs the suite.
set shell := ["bash", "-euo", "pipefail", "-c"]
# Recipe arguments reach commands as "$@", so `just test -m "not slow"` keeps its quoting.
set positional-arguments

venv := ".venv"
bin := venv + "/bin"

# Run one job end to end on the embedded stack (tiny model unless I2V_MODEL names another).
demo image="examples/harbor.png" output="out/demo.mp4":
    @just setup
    mkdir -p "$(dirname '{{output}}')"
    {{bin}}/i2v generate '{{image}}' -o '{{output}}' --state-dir .i2v/demo

# Run the whole test suite (slow tests included, as CI does), on two workers, a test file each at a time;
# then the timing checks marked alone, by themselves (tests/alone.py).
test *args:
    @just setup
    {{bin}}/pytest -n 2 --dist loadfile --alone=skip "$@"
    {{bin}}/pytest --alone=only "$@"

# Lint and type-check.
check:
    @just setup
    {{bin}}/ruff check .
    {{bin}}/ruff format --check .
    {{bin}}/mypy

# Run the embedded stack in the foreground; Ctrl-C stops it.
up:
    @just setup
    {{bin}}/i2v stack up

# The bus overhead benchmark: the same tiny job in one process vs through NATS + S3.
bench-overhead *args:
    @just setup
    {{bin}}/python bench/overhead.py "$@"

# Throughput on one machine: N tiny jobs at once through the stack vs the same N in one process.
bench-throughput *args:
    @just setup
    {{bin}}/python bench/throughput.py "$@"

# Create .venv and install the project with its pinned dependencies (re-run when pyproject changes).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x {{bin}}/python ]; then
        py=""
        for candidate in python3.11 python3.12 python3.13 python3; do
            if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
                py="$candidate"; break
            fi
        done
        [ -n "$py" ] || { echo "i2v needs Python >= 3.11 on PATH" >&2; exit 1; }
        "$py" -m venv {{venv}}
    fi
    if [ ! -f {{venv}}/.installed ] || [ pyproject.toml -nt {{venv}}/.installed ]; then
        {{bin}}/python -m pip install --quiet --upgrade pip
        {{bin}}/python -m pip install --quiet -e '.[dev]'
        touch {{venv}}/.installed
    fi
