#!/usr/bin/env bash
# Same accuracy in-process and through servers (issue 22's done-when): majority n=4, and beam
# search n=4 with prm=toy, each run in-process and through itc-serve's servers, same seeds
# (majority also with one request per sample: policy.openai.parallel_sampling=false).
# Writes the itc-curves table of the four runs to the results log.
#   benchmarks/server_parity.sh [LIMIT] [OUT]     (LIMIT problems of the toy set; default 100)
set -euo pipefail
LIMIT=${1:-100}
OUT=${2:-runs/server-parity}
PORT=${PORT:-18300}
PY=${PYTHON:-python}
ENGINE=(policy.vllm.gpu_memory_utilization=0.04 policy.vllm.enforce_eager=true)
PRM_ENGINE=(prm.vllm.gpu_memory_utilization=0.04)
RUN=(dataset.limit="$LIMIT" n=4)
SERVED=(policy.backend=openai "policy.openai.base_urls=[http://127.0.0.1:$PORT]")
PRM_SERVED=(prm.backend=openai "prm.openai.base_urls=[http://127.0.0.1:$((PORT + 1))]")
mkdir -p "$OUT"

"$PY" -m itc.cli.serve policy=toy prm=toy port="$PORT" log_dir="$OUT/serve" "${ENGINE[@]}" "${PRM_ENGINE[@]}" > "$OUT/serve.out" 2>&1 &
SERVE=$!
trap 'kill -TERM $SERVE 2>/dev/null; wait $SERVE 2>/dev/null || true' EXIT
until grep -q "itc-serve: ready" "$OUT/serve.out"; do
  kill -0 $SERVE 2>/dev/null || { cat "$OUT/serve.out"; exit 1; }
  sleep 5
done

"$PY" -m itc.cli.run strategy=majority "${RUN[@]}" "${ENGINE[@]}" hydra.run.dir="$OUT/majority-in-process"
"$PY" -m itc.cli.run strategy=majority "${RUN[@]}" "${SERVED[@]}" concurrency=4 batch_size=16 hydra.run.dir="$OUT/majority-server"
"$PY" -m itc.cli.run strategy=majority "${RUN[@]}" "${SERVED[@]}" policy.openai.parallel_sampling=false concurrency=4 batch_size=16 \
  hydra.run.dir="$OUT/majority-server-per-sample"
"$PY" -m itc.cli.run strategy=beam_search prm=toy "${RUN[@]}" "${ENGINE[@]}" "${PRM_ENGINE[@]}" hydra.run.dir="$OUT/beam-in-process"
"$PY" -m itc.cli.run strategy=beam_search prm=toy "${RUN[@]}" "${SERVED[@]}" "${PRM_SERVED[@]}" concurrency=4 batch_size=16 \
  hydra.run.dir="$OUT/beam-server"
"$PY" -m itc.cli.curves "$OUT/majority-in-process" "$OUT/majority-server" "$OUT/majority-server-per-sample" \
  "$OUT/beam-in-process" "$OUT/beam-server" \
  --out "$OUT/curves" --log "serving parity: in-process vs itc-serve servers (toy, limit $LIMIT)"
