#!/usr/bin/env bash
# Test helper: once a mapping checkpoint exists under the folder $1, send SIGTERM to the training
# process whose command line names that folder, as a spot instance's preemption notice would.
dir=$1
for _ in $(seq 3000); do
    if compgen -G "$dir/mapping-*/training_state.pt" >/dev/null; then
        exec pkill -TERM -f "[m]ap-spatial.*--checkpoint-dir $dir"
    fi
    sleep 0.1
done
