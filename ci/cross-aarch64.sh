#!/usr/bin/env bash
# Cross-tests qbench-kernels for aarch64 under qemu-user, once per rung of the aarch64
# ladder (neon-dotprod, neon, generic), forcing each with QBENCH_KERNEL. The exactness
# suite fails when a forced rung is not the one running, so a rung cannot be skipped
# silently.
#
# Installs what is missing: the rustup target, and (as root, via apt-get) qemu-user and
# the aarch64 cross toolchain. Uses CARGO_TARGET_DIR if set, else cargo's default.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
RUNGS=(neon-dotprod neon generic)

if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

native=false
[[ "$(uname -m)" == aarch64 ]] && native=true

if ! $native; then
    packages=()
    command -v qemu-aarch64 >/dev/null || packages+=(qemu-user)
    command -v aarch64-linux-gnu-gcc >/dev/null || packages+=(gcc-aarch64-linux-gnu)
    [[ -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ]] || packages+=(libc6-dev-arm64-cross)
    if ((${#packages[@]} > 0)); then
        echo "installing: ${packages[*]}"
        sudo=()
        [[ "$(id -u)" -ne 0 ]] && sudo=(sudo)
        "${sudo[@]}" apt-get update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
    fi
    # `-cpu max` makes the dot-product extension visible whatever qemu's default CPU is.
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}"
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER:-qemu-aarch64 -cpu max -L $SYSROOT}"
fi

start=$SECONDS
echo "=== build: qbench-kernels tests for $TARGET ==="
cargo test -p qbench-kernels --locked --tests --target "$TARGET" --no-run

failed=()
for rung in "${RUNGS[@]}"; do
    echo
    echo "=== $TARGET: QBENCH_KERNEL=$rung ==="
    if ! QBENCH_KERNEL="$rung" cargo test -p qbench-kernels --locked --tests --target "$TARGET"; then
        failed+=("$rung")
    fi
done

echo
if ((${#failed[@]} > 0)); then
    echo "cross-aarch64: FAILED on rung(s): ${failed[*]} ($((SECONDS - start)) s)"
    exit 1
fi
echo "cross-aarch64: all rungs passed (${RUNGS[*]}) in $((SECONDS - start)) s"
