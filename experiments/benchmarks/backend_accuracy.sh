#!/usr/bin/env bash
# Does a faster backend keep the probes' accuracy? The published Presto weights, exported, evaluated on
# the four committed evaluation splits (experiments/evaluation/run_all.sh) twice: probes on eager fp32
# embeddings and on the CANDIDATE backend's embeddings (efficiency.embed=true). Frozen logreg and kNN only.
#   bash experiments/benchmarks/backend_accuracy.sh                        # torch-int8 -> int8_accuracy/
#   CANDIDATE=torch-bf16 bash experiments/benchmarks/backend_accuracy.sh   # -> bf16_accuracy/
# Needs the real WorldCereal files in ../shared/data/worldcereal/ and the Presto weights in ../shared/presto/.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
CANDIDATE=${CANDIDATE:-torch-int8}
OUT=${OUT:-experiments/benchmarks/${CANDIDATE#torch-}_accuracy}
W=../shared/data/worldcereal
EXP=/tmp/cropssl_int8_accuracy_presto
$BIN/cropssl-export presto --out $EXP --format safetensors --overwrite >/dev/null
EA="datasets=[$W/2017_east_africa_public_month_wide.parquet] legend=CROPTYPE24 min_count=10"
FRA="datasets=[$W/2022_FRA_LPIS_month.geoparquet] legend=LANDCOVER10 min_count=15"
COMMON="encoders=[$EXP] strategies=[logreg,knn] baselines=[] robustness.enabled=false threads=1"

run() {  # name, backend, then overrides
  local name=$1 backend=$2
  shift 2
  rm -rf "$OUT/$name/$backend"
  # shellcheck disable=SC2086
  $BIN/cropssl-evaluate $COMMON efficiency.backend=$backend efficiency.embed=true "$@" \
    "out=$OUT/$name/$backend" >"/tmp/int8_accuracy_${name}_$backend.out" 2>&1
}
for backend in torch "$CANDIDATE"; do
  # shellcheck disable=SC2086
  run ea_random $backend $EA split=random &
  # shellcheck disable=SC2086
  run ea_geo_ssd $backend $EA split=geographic split.key=country "split.test_groups=[SSD]" &
  wait
  # shellcheck disable=SC2086
  run fra_random $backend $FRA split=random &
  # shellcheck disable=SC2086
  run fra_geo_h3 $backend $FRA split=geographic split.key=h3_l3_cell "split.test_groups=[831e94fffffffff]" &
  wait
done
find "$OUT" -name "*.png" -delete  # the plots of 8 small reports: not needed for the table
$BIN/python experiments/benchmarks/backend_accuracy_table.py "$OUT" "$CANDIDATE"
