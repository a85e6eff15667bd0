# VisionLens: `make run` serves the dashboard, `make test` runs the whole test suite.
# Both create .venv and install requirements.txt once; they reinstall only when it changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt 2>/dev/null | cut -c1-16)

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

run: install
	$(PY) -m streamlit run dashboard/serve.py --server.address=127.0.0.1 --server.port=8501

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/cam_methods.py

clean:
	rm -rf $(VENV) .pytest_cache artifacts
