# The runs of docs/RESULTS.md (2026-12-03, refit), one after the other, from the repository root:
#     bash docs/measurements/refit_2026-12-03/chain.sh
M=docs/measurements/refit_2026-12-03/measure.sh
bash $M a_inner20_best --inner-val 0.2 --selection best
bash $M b_refit_s42 --selection final
for s in 1 2 3 4; do bash $M b_refit_s$s --selection final train.seed=$s; done
