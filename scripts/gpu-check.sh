#!/usr/bin/env bash
# Correctness tests and benchmarks on a lent GPU machine that has no Rust toolchain and no
# network: everything it runs was built here and travels in .dev/ (see scripts/gpu-bundle.sh).
#
#   scripts/gpu-check.sh tests   # every test binary that needs no SmolLM2 weights
#   scripts/gpu-check.sh bench   # the rest of the tests, cargo xtask bench, variants, serving
#
# The tests run with CI=true (a missing adapter or fixture fails loudly). Logs and results go
# to $OUT. Each step has its own time limit and a failure does not stop the steps after it.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
phase=${1:-all}
root=$(pwd)
summary="$OUT/summary-$phase.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

# Vulkan loader (the image has the NVIDIA driver but no loader).
if ! ldconfig -p | grep -q libvulkan.so.1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
export INFER_BACKEND=vulkan CI=true RUST_BACKTRACE=1

# Binaries and tests bake in /work/main (CARGO_MANIFEST_DIR).
if [ "$root" != /work/main ]; then
  mkdir -p /work
  [ -e /work/main ] || ln -s "$root" /work/main
fi
if [ ! -x target/release/infer ] || [ .dev/bundle.tar.xz -nt target/release/infer ]; then
  tar -xJf .dev/bundle.tar.xz
fi
# The model travels in two calls (64 MiB each): a carried path not named by the next call
# is removed there, so part 1 is moved into models/ (ignored, not carried) on arrival.
gguf=models/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p models
[ -f .dev/model.part1 ] && cp .dev/model.part1 models/part1
if [ ! -f "$gguf" ] && [ -f models/part1 ] && [ -f .dev/model.part2 ]; then
  cat models/part1 .dev/model.part2 >"$gguf"
fi
if [ -f "$gguf" ] && ! sha256sum -c .dev/model.sha256 >/dev/null 2>&1; then
  note "MODEL CHECKSUM MISMATCH"
  rm -f "$gguf"
fi

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee -a "$summary"
target/release/infer devices 2>&1 | tee -a "$summary"

# One test binary: name, time limit, extra environment.
run_test() {
  local name=$1 limit=$2
  shift 2
  local bin
  bin=$(ls target/release/deps/"$name"-* 2>/dev/null | grep -v '\.d$' | head -1)
  if [ -z "$bin" ]; then
    note "test $name: MISSING BINARY"
    return
  fi
  local log="$OUT/tmp-test.log" t0=$SECONDS
  env "$@" timeout "$limit" "$bin" --test-threads=8 >"$log" 2>&1
  local rc=$?
  { echo "=== $name${TAG:-} rc=$rc"; cat "$log"; } >>"$OUT/tests-$phase.log"
  note "test $name${TAG:-} rc=$rc $((SECONDS - t0))s $(grep -E '^test result' "$log" | awk '{p+=$4; f+=$6; i+=$8} END {print "passed="p" failed="f" ignored="i}')"
  grep -E -A3 '^test .* FAILED|panicked' "$log" | head -30 >>"$summary"
  rm -f "$log"
}

if [ "$phase" = tests ] || [ "$phase" = all ]; then
  for t in ${GPU_CHECK_TESTS:-tensor infer_tensor kernels shaders infer_kernels archs llama \
    infer_models distribution topk infer_sampling infer_serve}; do
    run_test "$t" 150
  done
  # The CPU-adapter kernel choices, on this GPU too.
  if [ -z "${GPU_CHECK_TESTS:-}" ]; then
    TAG=-rows-splitsg run_test archs 150 INFER_MATVEC=rows INFER_ATTENTION=split_sg \
      INFER_WEIGHT_GROUP=8
    TAG=-lane run_test archs 150 INFER_ATTENTION=lane
  fi
fi

if [ "$phase" = bench ] || [ "$phase" = all ]; then
  for t in tokenizer gguf spec pipeline batch cli e2e; do
    run_test "$t" 150
  done
  if [ ! -f "$gguf" ]; then
    note "no SmolLM2 weights: benchmarks skipped"
    exit 1
  fi
  inf=target/release/infer
  # SM / memory clocks and utilisation through the benchmarks (decode steps are short
  # dispatches: does the GPU leave its idle clocks?).
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw \
    --format=csv,noheader -lms 500 >"$OUT/clocks.csv" 2>&1 &
  smi=$!
  INFER_ATTENTION=split timeout 60 $inf run --model "$gguf" --max-tokens 12 --chat --prompt "What is the capital of France?" >"$OUT/tmp0.txt" 2>&1
  note "capital of France (split): $(head -c 300 "$OUT/tmp0.txt" | tr '\n' ' ')"
  timeout 60 $inf run --model "$gguf" --max-tokens 12 --chat --prompt "What is the capital of France?" >"$OUT/tmp.txt" 2>&1
  note "capital of France: $(head -c 300 "$OUT/tmp.txt" | tr '\n' ' ')"
  t0=$SECONDS
  INFER_COMMIT=${INFER_COMMIT:-} timeout 420 target/release/xtask bench --backend vulkan --infer "$inf" --model "$gguf" \
    >"$OUT/xtask-bench.log" 2>&1
  note "xtask bench rc=$? $((SECONDS - t0))s"
  cp BENCHMARKS.md "$OUT/BENCHMARKS-gpu.md" 2>/dev/null
  cp bench/results.json "$OUT/results-gpu.json" 2>/dev/null
  mv "$OUT/xtask-bench.log" "$OUT/tmp-xtask.log"
  cat "$OUT/tmp-xtask.log" >>"$OUT/bench.log" && rm -f "$OUT/tmp-xtask.log"
  # Decode attention: the default against another choice (INFER_ATTENTION=$GPU_CHECK_AB,
  # default split: attention_split's phase 1), alternated.
  for r in 1 2; do
    for v in "INFER_DEFAULTS=1" "INFER_ATTENTION=${GPU_CHECK_AB:-split}"; do
      env "$v" timeout 60 $inf bench --json --model "$gguf" --prompt-tokens 128 \
        --gen-tokens 64 --runs 3 >"$OUT/tmp.json" 2>>"$OUT/bench.log"
      note "decode $v (round $r): $(tail -1 "$OUT/tmp.json" | grep -o '"prompt_128".*' | head -c 200)"
    done
  done
  # Long context: decode at 2048 (flash-decoding), by the default and the other choice.
  for v in "INFER_DEFAULTS=1" "INFER_ATTENTION=${GPU_CHECK_AB:-split}"; do
    env "$v" timeout 90 $inf bench --json --model "$gguf" --prompt-tokens 2048 --ctx-size 4096 \
      --max-batch 512 --gen-tokens 64 --runs 3 >"$OUT/tmp.json" 2>>"$OUT/bench.log"
    note "long context $v: $(tail -1 "$OUT/tmp.json" | grep -o '"prompt_2048".*' | head -c 300)"
  done
  # Speculation: prompt lookup n=2, adaptive k.
  for k in ""; do
    timeout 90 $inf bench --json --model "$gguf" --prompt-tokens 16 --gen-tokens 64 --runs 5 \
      --prompt-lookup 2 $k >"$OUT/tmp.json" 2>>"$OUT/bench.log"
    note "prompt lookup $k: $(tail -1 "$OUT/tmp.json" | grep -o '"speculative".*' | head -c 700)"
  done
  # Per-kernel GPU time of decode steps, by the default and the other choice.
  INFER_PROFILE=1 timeout 60 $inf run --model "$gguf" --max-tokens 4 --prompt "Hello" \
    >"$OUT/profile.txt" 2>&1
  INFER_ATTENTION=${GPU_CHECK_AB:-split} INFER_PROFILE=1 timeout 60 $inf run --model "$gguf" \
    --max-tokens 4 --prompt "Hello" >>"$OUT/profile.txt" 2>&1
  t0=$SECONDS
  timeout 120 $inf bench-serve --json --spawn "$gguf" --requests 16 >"$OUT/tmp-serve.json" 2>>"$OUT/bench.log"
  note "bench-serve rc=$? $((SECONDS - t0))s: $(tail -1 "$OUT/tmp-serve.json" | head -c 1500)"
  kill $smi 2>/dev/null
fi
rm -f "$OUT"/tmp*
note "done $phase"
