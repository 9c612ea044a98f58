#!/usr/bin/env bash
# Test helper: once a mapping checkpoint exists under the folder $1, send SIGTERM to the training
# process whose command line names that folder, as a spot instance's preemption notice would.
# (Reads /proc itself rather than needing pkill.)
dir=$1
for _ in $(seq 3000); do
    if compgen -G "$dir/mapping-*/training_state.pt" >/dev/null; then
        for proc in /proc/[0-9]*; do
            command=$(tr '\0' ' ' < "$proc/cmdline" 2>/dev/null) || continue
            if [[ "$command" == *map-spatial*"--checkpoint-dir $dir "* ]]; then
                kill -TERM "${proc#/proc/}"
            fi
        done
        exit 0
    fi
    sleep 0.1
done
