# Sourced by slurm/train.sh and slurm/sweep.sh after they `cd "$REPO"`: the repository's .venv, and the
# `--config C` flag split from the `section.key=value` overrides.

if [ -f "$REPO/.venv/bin/activate" ] && [ -z "${CHECKBOX_DIST_NO_VENV:-}" ]; then
    # shellcheck disable=SC1091
    source "$REPO/.venv/bin/activate"
fi

# parse_config_args ARGS...: sets CONFIG (default configs/checkbox_state_v2.yaml) and OVERRIDES (the rest).
parse_config_args() {
    CONFIG=configs/checkbox_state_v2.yaml
    OVERRIDES=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --config) CONFIG=$2; shift 2 ;;
            --config=*) CONFIG=${1#--config=}; shift ;;
            *) OVERRIDES+=("$1"); shift ;;
        esac
    done
}
