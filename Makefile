# The two commands of the README: `make demo` and `make test`. Each does all of its set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: demo test install data clean help

help:
	@echo "make demo    set up, train the default model on Fashion-MNIST (4 epochs), predict 20 test images"
	@echo "make test    set up and run the test suite"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST for offline use: Debian's package, where apt is there to install it. Elsewhere resnetlab
# downloads the data on first use.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "note: Debian's dataset-fashion-mnist is not installed; resnetlab will download Fashion-MNIST."; fi

demo: install data
	$(BIN)/resnetlab train --dataset fashion-mnist --out $(DEMO_OUT)
	$(BIN)/resnetlab predict $(DEMO_OUT)/best.pt -n 20

test: install data
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
