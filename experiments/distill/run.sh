#!/usr/bin/env bash
# A small student of Presto on the efficiency frontier (issue: CPU reality check, item 3).
#
#   bash experiments/distill/run.sh
#   STEPS=2000 INPUTS=all OUT=experiments/distill/results_all bash experiments/distill/run.sh
#
# INPUTS=fra_bel (default): the student sees the French and Belgian pixels only (East Africa stays unseen);
# INPUTS=all: all three bundled files (East Africa included, unlabelled).
#
# 1. method=distill: encoder=small (d=64, depth 2, MLP ratio 2; 8.9 MMACs/px against Presto's 43.5) learns to
#    reproduce frozen Presto's embeddings on the unlabelled real pixels of the bundled French and Belgian
#    files (the shards of experiments/continual, made by its run.py) for STEPS steps of 128 pixels;
# 2. its export;
# 3. cropssl-evaluate on the two geographic splits, Presto vs the student, frozen probes, with the measured
#    px/s of both (the report's frontier plots and cost table).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
STEPS=${STEPS:-1000}
OUT=${OUT:-experiments/distill/results}
INPUTS=${INPUTS:-fra_bel}
W=../shared/data/worldcereal
FILES=($W/2022_FRA_LPIS_month.geoparquet $W/2021_BEL_31UFS_month_cube_100x100.nc)
SHARDS=experiments/continual/results/data/fra_bel
if [ "$INPUTS" = all ]; then
  FILES+=($W/2017_east_africa_public_month_wide.parquet)
  SHARDS=experiments/distill/data/all
fi
mkdir -p "$OUT"
test -f "$SHARDS/manifest.json" || $BIN/cropssl-shard "${FILES[@]}" --out "$SHARDS" --overwrite
RUN=$OUT/runs/student
test -f "$RUN/summary.json" || OMP_NUM_THREADS=2 $BIN/cropssl-pretrain method=distill encoder=small \
  "data.train=$SHARDS" "trainer.max_steps=$STEPS" data.batch_size=128 "run_dir=$RUN" name=distill_student \
  trainer.enable_progress_bar=false > "$OUT/pretrain.log" 2>&1
EXPORT=experiments/distill/exports/presto-student-small$([ "$INPUTS" = all ] && echo -all)
$BIN/cropssl-export "$RUN/checkpoints/last.ckpt" --out "$EXPORT" --format safetensors --overwrite \
  > "$OUT/export.log" 2>&1
ENC="encoders=[presto,$EXPORT]"
COMMON=(strategies=[logreg,knn,catboost] baselines=[catboost_features] threads=2 bootstrap.n_boot=500)
$BIN/cropssl-evaluate "$ENC" "datasets=[$W/2022_FRA_LPIS_month.geoparquet]" legend=LANDCOVER10 min_count=15 \
  split=geographic split.key=h3_l3_cell "split.test_groups=[831e94fffffffff]" "${COMMON[@]}" \
  "title='Presto vs its small student: France, H3 cell 831e94fffffffff held out'" \
  "out=$OUT/fra_geo_h3" > "$OUT/eval_fra_geo_h3.log" 2>&1
$BIN/cropssl-evaluate "$ENC" "datasets=[$W/2017_east_africa_public_month_wide.parquet]" legend=CROPTYPE24 \
  min_count=10 split=geographic split.key=country "split.test_groups=[SSD]" "${COMMON[@]}" \
  "title='Presto vs its small student: East Africa, South Sudan held out (not seen by the student)'" \
  "out=$OUT/ea_geo_ssd" > "$OUT/eval_ea_geo_ssd.log" 2>&1
echo "reports: $OUT/{fra_geo_h3,ea_geo_ssd}/report.md"
