# The two commands of the README:
#   make demo   set up .venv, build an index of a generated catalog, search it, show results
#   make test   set up .venv and run the test suite (what CI runs)
VENV ?= .venv
STAMP := $(VENV)/.ibsr-installed

.PHONY: setup demo test
setup: $(STAMP)
$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/ibsr-demo

test: setup
	$(VENV)/bin/python -m pytest -q
