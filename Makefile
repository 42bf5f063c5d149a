# Two entry points, both self-installing into .venv on a fresh machine:
#   make demo   build an index over real sample images and search it
#   make test   run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE := disabled

.PHONY: demo test install bench-embed bench-index bench-kt clean

$(STAMP): pyproject.toml scripts/install.sh
	scripts/install.sh $(VENV) cpu,ingest,ray,postgres,test
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/curator demo

test: $(STAMP)
	$(PY) -m pytest -q --durations=15

bench-embed: $(STAMP)
	$(PY) benchmarks/bench_embed.py

bench-index: $(STAMP)
	$(PY) benchmarks/bench_index.py

bench-kt: $(STAMP)
	$(VENV)/bin/curator bench kt

clean:
	rm -rf .cache/demo
