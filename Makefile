# The README's commands. On a fresh machine each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
RUN ?= runs/quickstart/demo

.PHONY: demo test test-fast lint typecheck bench bench-label-efficiency bench-throughput bench-data bench-inference \
	bench-time-to-accuracy bench-model-zoo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.installed

## demo: train on the embedded synthetic dataset, evaluate the best checkpoint, predict a folder
demo: $(VENV)/.installed
	$(BIN)/bloodcls fit --config configs/quickstart.yaml --trainer.logger.init_args.version demo --overwrite_run true
	$(BIN)/bloodcls test --ckpt_path $(RUN)/checkpoints/best.ckpt
	$(BIN)/python -c "from bloodcls.data.synthetic import write_image_folder; write_image_folder('$(RUN)/demo_images', 4, 96, seed=123)"
	$(BIN)/bloodcls predict --ckpt_path $(RUN)/checkpoints/best.ckpt --data.predict_root $(RUN)/demo_images
	@echo "report: $(RUN)/test   predictions: $(RUN)/predict/predictions.csv"

## test: the whole test suite (hermetic; PBC tests skip without ../shared/datasets/pbc)
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

## test-fast: unit and contract tests only (no Slurm, Ray, DDP, compile, ONNX or multi-epoch fits), about 1.5 min
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m "not slow"

## bench: the speed benchmarks (never part of `make test`); results under bench/results/. The long accuracy grids
## (bench-label-efficiency, bench-model-zoo) are separate targets: hours on a 2-core CPU.
bench: bench-throughput bench-data bench-inference bench-time-to-accuracy

## bench-throughput: plain PyTorch loop vs bloodcls fit vs recommended CPU settings (PBC, 64 px, resnet18, batch 64),
## with this CPU's fp32 / bf16 matmul ceilings
bench-throughput: $(VENV)/.installed
	$(BIN)/python bench/throughput.py --ceiling $(BENCH_ARGS)

## bench-data: decode-once cache (cold vs later epochs), loader images/s vs the model's, cache memory
## (after bench-throughput: it reads bench/results/throughput/throughput.json)
bench-data: $(VENV)/.installed
	$(BIN)/python bench/data_pipeline.py $(BENCH_ARGS)

## bench-inference: bloodcls predict vs ONNX Runtime, with the export parity check (needs the export extra)
bench-inference: $(VENV)/.installed-dev
	$(BIN)/python bench/inference.py $(BENCH_ARGS)

## bench-time-to-accuracy: minutes of CPU training until PBC test accuracy reaches 97 % / 98 % (the 15-minute recipe,
## configs/pbc/cnn_small_64px_crop.yaml: chosen on validation among fits within 15 min on 2 cores, README)
bench-time-to-accuracy: $(VENV)/.installed
	$(BIN)/python bench/time_to_accuracy.py --config configs/pbc/cnn_small_64px_crop.yaml $(BENCH_ARGS)

## bench-model-zoo: every configs/models/*.yaml (+ classical baselines) on the PBC split, fixed epoch budget
bench-model-zoo: $(VENV)/.installed
	$(BIN)/python bench/model_zoo.py $(BENCH_ARGS)

## bench-label-efficiency: supervised vs semi-supervised strategies at 10/20/50/100 labels per class on PBC
bench-label-efficiency: $(VENV)/.installed
	$(BIN)/python bench/label_efficiency.py $(BENCH_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check bloodcls tests
	$(BIN)/ruff format --check bloodcls tests

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy bloodcls

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
