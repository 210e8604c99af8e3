#!/usr/bin/env bash
# A program that knows nothing of Python joins an hpopipe sweep through the `hpopipe trial` verbs.
#
# hpopipe proposes x and y (examples/external_cli.params.yaml), decides pruning and keeps the
# budget; the "training" is an awk formula, a loss that falls with each step. Any program in
# any language can take its place: it only reads one JSON line and calls three commands.
#
#   bash examples/external_cli.sh                      # run it as often as you like, at once
#   bash examples/external_cli.sh my.params.yaml       # another sweep
#
# Every verb is its own process; each call is the trial's heartbeat (docs/external.md).
set -euo pipefail

params=${1:-examples/external_cli.params.yaml}
steps=${STEPS:-3}
where=(--params "$params")
if [[ -n "${STORAGE:-}" ]]; then where+=(--storage "$STORAGE"); fi

field() {  # field JSON EXPR: a value out of one JSON line (jq would do as well)
    python3 -c "import json, sys; print(json.loads(sys.argv[1])$2)" "$1"
}

while true; do
    code=0
    # --owner-pid $$: if this script dies, its trial is retried at once, not after hpo.grace_s.
    trial=$(hpopipe trial ask "${where[@]}" --owner-pid $$) || code=$?
    if [[ $code -eq 3 ]]; then break; fi          # the budget is spent: null, exit 3
    if [[ $code -ne 0 ]]; then exit "$code"; fi   # paused, canceled, failed, a mistake: one line above
    number=$(field "$trial" '["number"]')
    x=$(field "$trial" '["params"]["x"]')
    y=$(field "$trial" '["params"]["y"]')
    pruned=no
    for ((step = 0; step < steps; step++)); do
        loss=$(awk -v x="$x" -v y="$y" -v s="$step" 'BEGIN { print (x - 0.7)^2 + (y + 0.3)^2 + 1 / (s + 1) }')
        answer=$(hpopipe trial report "${where[@]}" --number "$number" --step "$step" --value "$loss")
        if [[ $(field "$answer" '["stop"]') == True ]]; then pruned=yes; break; fi
    done
    if [[ $pruned == no ]]; then
        hpopipe trial tell "${where[@]}" --number "$number" --value "$loss" >/dev/null
    fi
    echo "trial $number: x=$x y=$y loss=$loss pruned=$pruned"
done
