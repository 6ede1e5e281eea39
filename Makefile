# The two commands of the README: `make demo` and `make test`. Each does all of its set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo's run folder, named in the README's first commands; the demo trains it again each time.
DEMO_OUT ?= runs/demo
# Set to https://download.pytorch.org/whl/cpu to install the CPU-only torch and torchvision first (no CUDA
# libraries, several GB smaller): make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: demo test lint install data test-system clean help figures bench

help:
	@echo "make demo    set up, train the default model on Fashion-MNIST (4 epochs) into $(DEMO_OUT), predict 20 test images"
	@echo "make test    set up and run the test suite"
	@echo "make lint    ruff's formatter and linter (the rules in pyproject.toml), as CI runs them"
	@echo "make figures the figures of the READMEs and docs/tutorial.md (about 10 minutes on 2 cores: a default run, the degradation experiment, gradients, layer responses)"
	@echo "make bench   every table of the READMEs' Results measured again on this machine (hours; benchmarks/results.py --list)"
	@echo "TORCH_INDEX=https://download.pytorch.org/whl/cpu  (with make demo/test/install) the CPU-only torch"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/pip install --quiet torch torchvision --index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST for offline use: Debian's package, where apt is there to install it. Elsewhere resnetlab
# downloads the data on first use.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "note: Debian's dataset-fashion-mnist is not installed; resnetlab will download Fashion-MNIST" \
		"(offline or without root: README.md, Datasets and offline use)."; fi

# What the tests need from Debian besides the data: Chromium for the browser test of `resnetlab serve`
# (Playwright drives it) and a font with CJK glyphs for the plots of CJK class names.
TEST_PACKAGES := chromium fonts-noto-cjk
test-system:
	@missing=$$(for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "note: install $$missing (Debian packages) to run every test; without them some tests fail."; fi

# --overwrite: the demo's own folder is trained again on each run (resnetlab train never replaces a run unasked).
# The commands printed at the end are the README's first examples (tests/test_docs.py checks they agree).
demo: install data
	$(BIN)/resnetlab train --dataset fashion-mnist --out $(DEMO_OUT) --overwrite
	$(BIN)/resnetlab predict $(DEMO_OUT)/best.pt -n 20
	@echo ""
	@echo "The demo's run is in $(DEMO_OUT): best.pt, metrics.csv, curves.png, predictions.png. Try next:"
	@echo "  $(BIN)/resnetlab eval $(DEMO_OUT)"
	@echo "  $(BIN)/resnetlab explain $(DEMO_OUT) 0 1 2 3 4 5 6 7"
	@echo "  $(BIN)/resnetlab serve $(DEMO_OUT)"
	@echo "(after source $(BIN)/activate, plain resnetlab works in that shell)"

test: install data test-system
	$(BIN)/python -m pytest -q

# Every table of the READMEs' Results, measured again on this machine (benchmarks/results.py; many hours on 2
# cores: `python benchmarks/results.py --tables latency inference` for a part).
bench: install data
	$(BIN)/python benchmarks/results.py

# The formatting is ruff's, not held by hand; `ruff format .` applies it.
LINTED := src tests benchmarks docs
lint: install
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)

# The figures of docs/tutorial.md. The degradation experiment reuses the nets already trained in FIGURES_RUN with
# the same settings, so a second run only redraws; the gradients of fresh nets (seconds) and the layer responses of
# the trained ones (Figure 7) follow it.
FIGURES_RUN ?= runs/figures
FIGURES_NETS := plain20 plain56 resnet20 resnet56
# The README's pictures of a run (curves, confusion matrix, predictions, the serve page) come from a default
# Fashion-MNIST run, trained once (about 3 minutes).
FIGURES_DEFAULT := $(FIGURES_RUN)/fashion-mnist
$(FIGURES_DEFAULT)/best.pt:
	$(BIN)/resnetlab train --dataset fashion-mnist --out $(FIGURES_DEFAULT) --overwrite

figures: install data test-system $(FIGURES_DEFAULT)/best.pt
	$(BIN)/resnetlab experiment degradation --out $(FIGURES_RUN)/degradation
	$(BIN)/resnetlab experiment gradients --depths 20,56 --out $(FIGURES_RUN)/gradients
	$(BIN)/resnetlab experiment responses $(addprefix $(FIGURES_RUN)/degradation/,$(FIGURES_NETS)) \
		--out $(FIGURES_RUN)/responses
	mkdir -p docs/images
	cp $(FIGURES_RUN)/degradation/degradation.png $(FIGURES_RUN)/degradation/degradation.csv \
		$(FIGURES_RUN)/degradation/degradation.md docs/images/
	cp $(FIGURES_RUN)/gradients/gradients.png $(FIGURES_RUN)/gradients/gradients.csv \
		$(FIGURES_RUN)/responses/responses.png $(FIGURES_RUN)/responses/responses.csv docs/images/
	$(BIN)/resnetlab explain $(FIGURES_RUN)/degradation/resnet56 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 \
		--out docs/images/gradcam.png
	$(BIN)/python docs/print_blocks.py > docs/images/blocks.txt
	$(BIN)/python docs/block_diagram.py docs/images/blocks.png
	$(BIN)/resnetlab eval $(FIGURES_DEFAULT)
	$(BIN)/resnetlab predict $(FIGURES_DEFAULT) -n 16 --save docs/images/predictions.png
	cp $(FIGURES_DEFAULT)/curves.png $(FIGURES_DEFAULT)/confusion_matrix.png docs/images/
	$(BIN)/python docs/serve_screenshot.py $(FIGURES_DEFAULT) --out docs/images/serve.png

clean:
	rm -rf $(VENV) .pytest_cache
