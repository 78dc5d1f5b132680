# Front door. `make serve` and `make test` set up everything on a fresh Debian 12 machine.
BUILD_DIR      ?= build
SANITIZE_DIR   ?= build-sanitize
BUILD_TYPE     ?= Release
NIMBLE_CUDA    ?= AUTO
CMAKE_FLAGS    ?=
GRPC_ADDRESS   ?= 127.0.0.1:8001
METRICS_PORT   ?= 8002
MODEL_REPO     ?= models
CTEST_ARGS     ?=
JOBS           ?= $(shell nproc)

.PHONY: all deps configure build serve test bench format sanitize tsan fuzz clean

all: build

deps:
	./scripts/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	  -DNIMBLE_CUDA=$(NIMBLE_CUDA) $(CMAKE_FLAGS)

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# The bundled repository's BERT (2 layers, exported with Debian's PyTorch) is generated on first
# use: its 17 MB of weights are not kept in git.
BUNDLED_BERT := models/bert/1/model.onnx
$(BUNDLED_BERT):
	/usr/bin/python3 scripts/export_models.py $(BUILD_DIR)/models-small --models bert --small
	mkdir -p $(dir $@)
	cp $(BUILD_DIR)/models-small/bert/model.onnx $@.tmp && mv $@.tmp $@

# Ctrl-C reaches the server (the recipe's only command), which drains and exits 0.
serve: build $(if $(filter models,$(MODEL_REPO)),$(BUNDLED_BERT))
	$(BUILD_DIR)/server/nimble-server --model-repository=$(MODEL_REPO) \
	  --grpc-address=$(GRPC_ADDRESS) --metrics-port=$(METRICS_PORT)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The benchmark suite (bench/run_all.py): builds only what it runs, exports the models it
# needs, writes bench/results/*.json, bench/REPORT.md and bench/report/*.png. Offline; stops
# at the first failing step. BENCH_ARGS e.g. `--only bert_cpu,report` or `--no-base-load`.
BENCH_ARGS ?=
bench: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target nimblec nimble-server nimble-load \
	  bench_grpc_roundtrip
	/usr/bin/python3 bench/run_all.py --build-dir $(BUILD_DIR) --threads $(JOBS) $(BENCH_ARGS)

format:
	git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format -i

# ASan + UBSan build of everything, then every test.
sanitize: deps
	cmake -S . -B $(SANITIZE_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DNIMBLE_CUDA=$(NIMBLE_CUDA) -DNIMBLE_SANITIZE=address,undefined $(CMAKE_FLAGS)
	cmake --build $(SANITIZE_DIR) -j $(JOBS)
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
	  ctest --test-dir $(SANITIZE_DIR) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# ThreadSanitizer over the tests that share executables, VMs and kernels across threads.
TSAN_DIR ?= build-tsan
tsan: deps
	cmake -S . -B $(TSAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNIMBLE_CUDA=OFF \
	  -DNIMBLE_SANITIZE=thread $(CMAKE_FLAGS)
	cmake --build $(TSAN_DIR) -j $(JOBS) --target vm_test compiler_pipeline_test
	TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/scripts/tsan.supp" \
	  ctest --test-dir $(TSAN_DIR) --output-on-failure -R "^(vm_test|compiler_pipeline_test)$$"

# libFuzzer targets (clang): the ONNX importer and the executable loader.
FUZZ_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz: deps
	cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNIMBLE_CUDA=OFF \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DNIMBLE_FUZZ=ON $(CMAKE_FLAGS)
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target onnx_importer_fuzzer executable_fuzzer
	mkdir -p $(FUZZ_DIR)/corpus-onnx $(FUZZ_DIR)/corpus-nbx
	for t in add if loop11 gather_0 reshape_extended_dims; do \
	  cp ../shared/conformance/onnx-node/test_$$t/model.onnx $(FUZZ_DIR)/corpus-onnx/$$t.onnx; done
	$(FUZZ_DIR)/compiler/frontend/onnx/onnx_importer_fuzzer -max_total_time=$(FUZZ_SECONDS) \
	  $(FUZZ_DIR)/corpus-onnx
	$(FUZZ_DIR)/vm/executable_fuzzer -max_total_time=$(FUZZ_SECONDS) $(FUZZ_DIR)/corpus-nbx

clean:
	rm -rf $(BUILD_DIR) $(SANITIZE_DIR) $(TSAN_DIR) $(FUZZ_DIR)
