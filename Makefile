# The two commands of the README:
#   make demo   set up .venv, build an index of a generated catalog, search it, show results
#   make test   set up .venv and run the test suite (what CI runs)
VENV ?= .venv
STAMP := $(VENV)/.ibsr-installed
TEST_STAMP := $(VENV)/.ibsr-test-installed

.PHONY: setup test-setup demo test
setup: $(STAMP)
$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

test-setup: $(TEST_STAMP)
$(TEST_STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh --test $(VENV)
	touch $(STAMP) $(TEST_STAMP)

demo: setup
	$(VENV)/bin/ibsr-demo

test: test-setup
	$(VENV)/bin/python -m pytest -q
