# run from the code snapshot (python -m puts the cwd first on sys.path)
cd /work/wt29/runs/code
export PY=/work/main/.venv/bin/python OUT_ROOT=/work/wt29/runs/refit CODE=/work/wt29/runs/code
M=/work/wt29/docs/measurements/refit_2026-12-03/measure.sh
bash $M a_inner20_best --inner-val 0.2 --selection best
bash $M b_refit_s42 --selection final
for s in 1 2 3 4; do bash $M b_refit_s$s --selection final train.seed=$s; done
