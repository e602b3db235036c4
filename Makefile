# cloudsh — `make demo` runs the app on the local sandbox cloud, `make test` runs every test.
# Both install what they need: a .venv from pyproject.toml, and Debian packages
# (tmux, openssh-client, rsync, bubblewrap) via apt-get when run as root.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-install

.PHONY: demo test lint bench screenshots system-deps bytecode clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "cloudsh needs Python 3.11 or newer (set PYTHON=python3.11)")'
	@echo "cloudsh: first run: creating $(VENV) and installing cloudsh and its dependencies (a minute or so)..."
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[dev]'
	@echo "cloudsh: installed into $(VENV)"
	@touch $(STAMP)

system-deps:
	@sh .ci/system-deps

# Byte-compiled up front, as an installed package is: where PYTHONDONTWRITEBYTECODE
# is set, every start would otherwise compile the app's modules again (50-100 ms); and
# EC2's botocore model parsed once here rather than at a first start (~100 ms).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q cloudsh
	@$(BIN)/python -m cloudsh.services.models

demo: $(STAMP) system-deps bytecode
	CLOUDSH_SANDBOX=1 $(BIN)/python -m cloudsh.tui.demo

test: $(STAMP) system-deps
	$(BIN)/pytest -q -n 3

lint: $(STAMP)
	$(BIN)/ruff check cloudsh tests bench
	$(BIN)/mypy cloudsh
	$(BIN)/lint-imports --no-cache

bench: $(STAMP) system-deps bytecode
	$(BIN)/python -m bench

screenshots: $(STAMP) system-deps bytecode
	$(BIN)/python -m bench.screenshots

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
