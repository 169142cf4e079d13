#!/usr/bin/env bash
# Records this table: the 32-point grid (blocks 1 or 2 per stage; log2 widen-factor ratios -1 or 0
# at each stage boundary) at 60K parameters on digits, with the demo's recipe (PGD-AT, 80 epochs,
# no early stopping), once per training seed, then every config's best.pt on the test split.
# About 1 hour on 2 CPU cores. Usage: bash data/digits-grid-60K/record.sh STORAGE
set -euo pipefail
storage=${1:?usage: record.sh STORAGE}
for seed in 0 1; do
  python -m search.run --demo --name "digits-grid-60K-s$seed" --seed "$seed" --address local \
    --space grid --grid-depths 1,2 --grid-ratios=-1,0 --trials 32 \
    --final-eval 32 --final-attacks clean,pgd20 --storage "$storage"
done
