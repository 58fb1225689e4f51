# The README's two commands. Each one installs what it needs (idempotently, pinned, hash-checked) first.
#   make demo   build the CLI, export the text encoder, and draw prompts with the shipped models/emoji
#               (out/demo.png, out/morph.gif) plus the Fashion-MNIST demo (out/demo-fashion.png)
#   make test   every test: Rust unit + integration, C and C++ programs, header freshness, ONNX parity, the
#               install (make install into a temporary prefix, programs built with pkg-config and CMake), and
#               the bindings: Python, C# (mono) and the GIMP plug-in (real GIMP, headless)
.PHONY: demo test lint lib install install-gimp check-deep sanitize setup-runtime setup-train header bench

CARGO ?= cargo
FEATURES_TEST := train,test-panic
# The text encoder exported from the setup's safetensors by the just-built CLI; encoder.json is written
# last, so its presence means a complete export (never committed: about 90 MB).
MINILM := models/minilm/encoder.json
# Where cargo puts its builds (CARGO_TARGET_DIR when set, as cargo itself does).
TARGET ?= $(or $(CARGO_TARGET_DIR),target)
MIRAGE_BIN ?= $(TARGET)/debug/mirage

setup-runtime:
	scripts/setup.sh ort data text

setup-train:
	scripts/setup.sh ort torch data emoji text hosts python

demo: setup-runtime
	$(CARGO) build --release --bin mirage
	$(MAKE) --no-print-directory $(MINILM) MIRAGE_BIN=$(TARGET)/release/mirage
	$(TARGET)/release/mirage generate --prompt "a red apple" --prompt "red heart" --prompt "grinning face" \
		--prompt "woman pilot" --count 4 --seed 1 --scale 4 -o out/demo.png
	$(TARGET)/release/mirage interpolate --prompt "a cat face" --prompt "a dog face" --frames 16 --seed 3 -o out/morph.gif
	$(TARGET)/release/mirage demo --models models/fashion -o out/demo-fashion.png

test: setup-train
	$(CARGO) fmt --check
	# The C and C++ tests link target/debug/libmirage.so: build it (same features) before the test binaries run.
	$(CARGO) build --features $(FEATURES_TEST) --lib --bins
	$(MAKE) --no-print-directory $(MINILM) MIRAGE_BIN=$(TARGET)/debug/mirage
	MIRAGE_VALGRIND=1 $(CARGO) test --features $(FEATURES_TEST)
	# The installed library: make install into a temporary prefix, C programs built from it (pkg-config, CMake).
	tests/install/run.sh
	# The bindings, against this build: Python (installed into the setup's venv, with numpy and Pillow).
	.deps/pyvenv/bin/python -m pip install --quiet --no-build-isolation --no-deps --force-reinstall bindings/python
	MIRAGE_LIBRARY=$(TARGET)/debug/libmirage.so MIRAGE_REQUIRE_OPTIONAL=1 \
		.deps/pyvenv/bin/python -m unittest discover -s bindings/python/tests
	# C# under mono, and the GIMP plug-in in real GIMP 2.10 (headless).
	bindings/csharp/run-tests.sh $(TARGET)/debug models
	MIRAGE_LIBS="-L$(abspath $(TARGET))/debug -lmirage -Wl,-rpath,$(abspath $(TARGET))/debug" \
		MIRAGE_CFLAGS="-I$(CURDIR)/include" bindings/gimp/run-tests.sh models

lint: setup-train
	$(CARGO) clippy --features $(FEATURES_TEST) --all-targets -- -D warnings
	# The library as hosts build it (`make lib`): no CLI, no exporter.
	$(CARGO) clippy --lib --no-default-features --features cuda,tensorrt -- -D warnings

# Benchmarks, run by hand (figures belong to the machine: never in CI). mirage bench built with the trainer, so
# that its table has the libtorch column; then one training step of each architecture (mirage-train bench).
# Figures in out/bench.json and out/bench-train.json; the README shows this machine's.
bench: setup-train
	$(CARGO) build --release --features train --bins
	$(MAKE) --no-print-directory $(MINILM) MIRAGE_BIN=$(TARGET)/release/mirage
	mkdir -p out
	$(TARGET)/release/mirage bench --models models/emoji --batch 1,4,16 --json out/bench.json
	$(TARGET)/release/mirage-train bench --json out/bench-train.json

# The library alone, as a host links it: target/release/libmirage.so and .a without the CLI's dependencies
# and the ONNX exporter (Cargo.toml's features `cli` and `export`).
lib:
	$(CARGO) build --release --lib --no-default-features --features cuda,tensorrt
	ln -sfn libmirage.so $(TARGET)/release/libmirage.so.0

# Installs the library like a C library (scripts/install.sh says what goes where): make install PREFIX=/opt/mirage
# [DESTDIR=/staging]. Needs the exported text encoder (models/minilm, made by make demo or make test).
PREFIX ?= /usr/local
DESTDIR ?=
install: setup-runtime lib
	test -f $(MINILM) || $(CARGO) build --release --bin mirage
	test -f $(MINILM) || $(MAKE) --no-print-directory $(MINILM) MIRAGE_BIN=$(TARGET)/release/mirage
	scripts/install.sh "$(DESTDIR)" "$(PREFIX)" $(TARGET)/release

# The GIMP 2.10 plug-in into the user's plug-in folder (bindings/gimp/README.md), linked against an installed
# mirage when pkg-config finds one, else this checkout's debug build.
install-gimp:
	$(MAKE) -C bindings/gimp install-user

# Long checks, run by hand before resolving safety work, never in CI (they need second, instrumented builds
# of the crate graph with the nightly toolchain): `make sanitize`, then every fuzz target for FUZZ_RUNS
# executions or FUZZ_SECONDS, whichever ends first (cargo-fuzz, libFuzzer + AddressSanitizer; fuzz/README.md).
# A crash leaves its input in fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/, where the
# normal tests replay it (tests/hostile.rs).
FUZZ_TARGETS := manifest png params host_image tokenize model_set pack host_buffer
FUZZ_RUNS ?= 1000000
FUZZ_SECONDS ?= 1800
check-deep: setup-train
	$(CARGO) build --features $(FEATURES_TEST) --lib --bins
	$(MAKE) --no-print-directory $(MINILM) MIRAGE_BIN=$(TARGET)/debug/mirage
	$(MAKE) --no-print-directory sanitize
	cargo install cargo-fuzz --locked --version 0.13.2
	set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/work/$$t fuzz/corpus/$$t; \
		(cd fuzz && cargo +nightly fuzz run $$t work/$$t corpus/$$t -- -runs=$(FUZZ_RUNS) \
			-max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=4096 -print_final_stats=1); \
	done

# Sanitizers (part of check-deep). 1: the Rust tests of the C API and the hostile suites in a build where
# libmirage and its Rust dependencies are instrumented with AddressSanitizer + LeakSanitizer (nightly
# -Zsanitizer=address; ONNX Runtime and libtorch are not instrumented, the train feature is off). 2: the C and
# C++ test programs built with gcc's -fsanitize=address,undefined (MIRAGE_TEST_CFLAGS) against the normal
# libmirage.so, so that LeakSanitizer sees every allocation of the library (Rust uses the system malloc) and
# UBSan checks the programs' side of each call. valgrind (in `make test`) covers reads inside the
# uninstrumented library.
ASAN_RUSTFLAGS := -Zsanitizer=address -Cforce-frame-pointers=yes
sanitize: setup-runtime
	MIRAGE_SANITIZER=address RUSTFLAGS="$(ASAN_RUSTFLAGS)" RUSTDOCFLAGS="$(ASAN_RUSTFLAGS)" ASAN_OPTIONS=detect_leaks=1 \
		LSAN_OPTIONS=suppressions=$(CURDIR)/tests/c/lsan.supp:print_suppressions=0 \
		$(CARGO) +nightly test --target x86_64-unknown-linux-gnu --features test-panic --target-dir $(TARGET)/asan \
		--test tests -- capi:: hostile:: nulls:: runtime:: pipeline:: jobs:: \
		--skip c_program --skip c_diffusion --skip freed_and_foreign_handles
	MIRAGE_VALGRIND=0 MIRAGE_TEST_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
		LSAN_OPTIONS=suppressions=$(CURDIR)/tests/c/lsan.supp:print_suppressions=0 \
		$(CARGO) test --features $(FEATURES_TEST) --test tests -- c_program c_diffusion c_text cpp_text header_example cpp_wrapper c_gameloop_program

# Regenerate include/mirage.h after changing the C API (the header test fails until you do).
header:
	MIRAGE_BLESS=1 $(CARGO) test --features $(FEATURES_TEST) --test tests header

$(MINILM): .deps/minilm/model.safetensors src/export/minilm.rs
	$(MIRAGE_BIN) text-encoder export --from .deps/minilm --out models/minilm
