#!/usr/bin/env bash
# Here, after a device call of bench/gpu/device.sh: unpack what came back into the results folder.
#   bash bench/gpu/fetch.sh FILES_AT          (the `files_at` folder of the run's reply)
# sweep.tar.gz   -> examples/h100-2026-11-23/sweep/            (replaced: the device copy is newer)
# records.tar.xz -> .gpu/records/                              (ignored by git: records stay out)
# sbs.tar.gz     -> examples/h100-2026-11-23/side-by-side/ and side_by_side.md
# quality.tar.gz -> examples/h100-2026-11-23/quality/{sweep,fp8-proof,exact-match}/ (trained model)
#                   and .../quality-smollm2/{sweep,fp8-proof,exact-match}/ (SmolLM2-135M, issue 33)
# cpu-bench.tar.gz -> bench/results/locust_overhead_scale.{md,json}, RES/fidelity/*.{md,json}
# call.log, env.txt -> examples/h100-2026-11-23/logs/
# (examples/h100-2026-11-23 stands for RES: the folder env.txt's RES= line names, i.e. the one the
# call ran for; a RES given here must agree with it.)
# The results folder travels with the next call, so a fresh machine resumes from it.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: bash bench/gpu/fetch.sh FILES_AT" >&2; exit 2; }
FROM=$(cd "$1" && pwd)
cd "$(git rev-parse --show-toplevel)"
CALL_RES=$(sed -n 's/^RES=//p' "$FROM/env.txt" 2>/dev/null | tail -1)
if [ -n "${RES:-}" ] && [ -n "$CALL_RES" ] && [ "$RES" != "$CALL_RES" ]; then
  echo "error: the call ran for RES=$CALL_RES (env.txt), not RES=$RES: nothing unpacked" >&2
  exit 2
fi
RES=${RES:-${CALL_RES:-examples/h100-2026-11-23}}  # a call from before env.txt named RES: the H100 run
echo "unpacking into $RES"
mkdir -p $RES/logs .gpu/records
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
n=$(find $RES/logs -name 'call-*.log' | wc -l)
stamp=$(printf '%02d' $((n + 1)))
[ -f "$FROM/call.log" ] && cp "$FROM/call.log" $RES/logs/call-$stamp.log
[ -f "$FROM/env.txt" ] && cp "$FROM/env.txt" $RES/logs/env.txt
if [ -f "$FROM/sweep.tar.gz" ]; then
  tar -C "$TMP" -xzf "$FROM/sweep.tar.gz"
  rm -rf $RES/sweep && mv "$TMP/h100-sweep" $RES/sweep
  echo "sweep: $(wc -l < $RES/sweep/points.jsonl 2>/dev/null || echo 0) points"
fi
if [ -f "$FROM/records.tar.xz" ]; then
  xz -dc "$FROM/records.tar.xz" | tar -C .gpu/records -xf -
  echo "records: $(find .gpu/records -name 'records*.jsonl' | wc -l) files under .gpu/records"
fi
if [ -f "$FROM/sbs.tar.gz" ]; then
  tar -C "$TMP" -xzf "$FROM/sbs.tar.gz"
  rm -rf $RES/side-by-side && mv "$TMP/sbs" $RES/side-by-side
  [ -f $RES/side-by-side/side_by_side.md ] && cp $RES/side-by-side/side_by_side.md $RES/side_by_side.md
  echo "side by side: $RES/side_by_side.md"
fi
if [ -f "$FROM/cpu-bench.tar.gz" ]; then  # the CPU-only steps: fidelity/ and locust-scale/
  tar -C "$TMP" -xzf "$FROM/cpu-bench.tar.gz"
  if compgen -G "$TMP/cpu-bench/locust-scale/locust_overhead_scale.*" >/dev/null; then
    cp "$TMP"/cpu-bench/locust-scale/locust_overhead_scale.* bench/results/
    echo "locust scale-out: bench/results/locust_overhead_scale.md"
    if [ -d "$TMP/cpu-bench/locust-scale/locust_overhead_scale-logs" ]; then  # the tools' log tails
      mkdir -p $RES && cp -r "$TMP/cpu-bench/locust-scale/locust_overhead_scale-logs" $RES/locust-scale-logs
      echo "locust scale-out logs: $RES/locust-scale-logs"
    fi
  elif [ -d "$TMP/cpu-bench/locust-scale" ]; then  # cut before it wrote its tables
    echo "locust scale-out: no tables (see the call log)"
  fi
  for d in "$TMP"/cpu-bench/fidelity/*/; do
    [ -f "$d/client_overhead.json" ] || continue
    # Into the call's own results folder: a later session's runs never overwrite an earlier one's.
    name=$(basename "$d"); mkdir -p $RES/fidelity
    cp "$d/client_overhead.json" $RES/fidelity/$name.json
    cp "$d/client_overhead.md" $RES/fidelity/$name.md
    echo "fidelity: $RES/fidelity/$name.md"
  done
fi
if [ -f "$FROM/quality.tar.gz" ]; then
  tar -C "$TMP" -xzf "$FROM/quality.tar.gz"
  for pair in q-sweep:quality/sweep q-proof:quality/fp8-proof q-em:quality/exact-match \
              qs-sweep:quality-smollm2/sweep qs-proof:quality-smollm2/fp8-proof qs-em:quality-smollm2/exact-match; do
    src=${pair%%:*} dst=${pair#*:}
    if [ -d "$TMP/$src" ]; then
      mkdir -p "$(dirname "$RES/$dst")" && rm -rf "$RES/$dst" && mv "$TMP/$src" "$RES/$dst" && echo "quality: $RES/$dst"
    fi
  done
fi
du -sh $RES
