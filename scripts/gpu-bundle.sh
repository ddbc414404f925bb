#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh runs on a lent GPU machine (no Rust toolchain, no network)
# into .dev/ (git-ignored): stripped release binaries and test executables at their
# target/release paths, stories260K, and the default model split in two parts (a call to
# the machine carries at most 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p infer-cli -p xtask
cargo test --workspace --release --no-run --message-format=json 2>/dev/null >/tmp/gpu-testbins.json
rm -rf .dev/stage && mkdir -p .dev/stage/target/release/deps
cp target/release/infer target/release/xtask .dev/stage/target/release/
python3 - <<'PY'
import json, shutil
for line in open('/tmp/gpu-testbins.json'):
    m = json.loads(line)
    if m.get('reason') == 'compiler-artifact' and m.get('executable') and m['profile'].get('test'):
        shutil.copy(m['executable'], '.dev/stage/target/release/deps/')
PY
strip .dev/stage/target/release/infer .dev/stage/target/release/xtask .dev/stage/target/release/deps/*
tar -C .dev/stage -cf - target | xz -T2 -9 >.dev/bundle.tar.xz
rm -rf .dev/stage .dev/stories260K
m=models/SmolLM2-135M-Instruct.Q4_1.gguf
(sha256sum "$m") >.dev/model.sha256
rm -f .dev/model.part*
head -c 42000000 "$m" >.dev/model.part1
tail -c +42000001 "$m" >.dev/model.part2
ls -la .dev
