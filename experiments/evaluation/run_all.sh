#!/usr/bin/env bash
# Re-run the four evaluation reports of experiments/evaluation/ (issue: crop type mapping evaluation).
#
# Needs: the real WorldCereal files in ../shared/data/worldcereal/, the Presto weights in ../shared/presto/,
# and the seven encoders pre-trained by experiments/compare_families (see its README), exported to
# experiments/compare_families/exports/<method>:
#   for m in mae simclr mocov3 byol dino barlow vicreg; do
#     cropssl-export work/compare_families_sweep*/*_compare_$m/checkpoints/last.ckpt \
#       --out experiments/compare_families/exports/$m --format safetensors
#   done
# Two reports run at a time (one torch thread each: the machine has 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
W=../shared/data/worldcereal
X=${X:-experiments/compare_families/exports}  # where the exports of METHODS are
METHODS=${METHODS:-mae,simclr,mocov3,byol,dino,barlow,vicreg}  # the exports to evaluate besides presto, random
ENC="encoders=[presto,random$(printf ",$X/%s" ${METHODS//,/ })]"
EA="datasets=[$W/2017_east_africa_public_month_wide.parquet] legend=CROPTYPE24 min_count=10"
FRA="datasets=[$W/2022_FRA_LPIS_month.geoparquet] legend=LANDCOVER10 min_count=15"

run() {  # out, then overrides
  local out=$1
  shift
  rm -rf "experiments/evaluation/$out"
  $BIN/cropssl-evaluate "$ENC" "$@" threads=1 "out=experiments/evaluation/$out" >"/tmp/eval_$out.out" 2>&1
}

# shellcheck disable=SC2086  # $EA / $FRA are lists of overrides
run ea_random $EA split=random "title='East Africa, CROPTYPE24, stratified random split'" &
run ea_geo_ssd $EA split=geographic split.key=country "split.test_groups=[SSD]" \
  "title='East Africa, CROPTYPE24, South Sudan held out'" &
wait
run fra_random $FRA split=random save_heads=true "title='France (Corsica LPIS), LANDCOVER10, stratified random split'" &
run fra_geo_h3 $FRA split=geographic split.key=h3_l3_cell "split.test_groups=[831e94fffffffff]" \
  "title='France (Corsica LPIS), LANDCOVER10, H3 cell 831e94fffffffff (south) held out'" &
wait
echo "reports: experiments/evaluation/{ea_random,ea_geo_ssd,fra_random,fra_geo_h3}/report.md"
