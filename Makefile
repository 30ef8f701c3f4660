# The two commands a new machine needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test check install check-java package clean notebook

$(BIN)/activate:
	@command -v $(PYTHON) >/dev/null || { echo "reelrank needs Python 3.11 ($(PYTHON) not found): install python3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

check-java:
	@command -v java >/dev/null || [ -x "$$JAVA_HOME/bin/java" ] || { echo "reelrank needs Java 17 for Spark: install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"; exit 1; }

run: install check-java
	$(BIN)/reelrank nightly $(ARGS)

test: install check-java
	$(BIN)/python -m pytest $(ARGS)

# JupyterLab on notebooks/ (the notebook extra, installed on first use); set REELRANK_DATA_DIR to explore a --data-dir
notebook: install
	$(BIN)/pip install -q -e '.[test,notebook]'
	$(BIN)/jupyter lab notebooks/

# the wheel and the packed Python environment for a cluster's executors, in dist/ (deploy/build.sh)
package: install
	PYTHON=$(PYTHON) RR_VENV=$(VENV) deploy/build.sh dist

# lint (ruff: style, import order, bug patterns) and type check (mypy on lib/); .ci/run runs it before the tests
check: install
	$(BIN)/ruff check lib jobs tests bench deploy
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache lib/*.egg-info dist
