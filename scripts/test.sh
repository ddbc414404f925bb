#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or one that is already set up:
# installs a Vulkan driver when there is none (Mesa's lavapipe), fetches the default model,
# checks formatting and lints, then runs every test. GPU tests run on the real adapter;
# with CI=true a missing adapter or fixture fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-vulkan.sh
# Skip GL probing noise (and a silent fall back to GL) unless the caller chose a backend.
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
cargo xtask model
cargo xtask model gemma3-270m
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace
# The OpenAI-compatible server, end to end through the official openai client (and nginx).
bash tests/serve/run.sh
