#!/usr/bin/env bash
# Stop the single-node Slurm that scripts/slurm/start.sh started: cancel its jobs (SIGKILL, no grace),
# then stop slurmd, slurmctld and munged by the pid files in the state folder, and remove the
# /etc/slurm/slurm.conf link if it points at our config. Only processes named in those pid files are
# signalled. Idempotent: nothing running is not an error. The state folder (logs, job-completion log) is
# kept; delete $LORAVEN_SLURM_DIR to start from nothing.
#
#   scripts/slurm/stop.sh
#
# Environment: LORAVEN_SLURM_DIR, the state folder [/tmp/loraven-slurm].
set -uo pipefail

STATE=${LORAVEN_SLURM_DIR:-/tmp/loraven-slurm}
CONF="$STATE/slurm.conf"
export SLURM_CONF="$CONF"
say() { echo "slurm/stop: $*" >&2; }
pid_of() { [ -s "$STATE/run/$1.pid" ] && cat "$STATE/run/$1.pid"; }
alive() { local p; p=$(pid_of "$1") && kill -0 "$p" 2>/dev/null; }

# jobs first, while slurmctld and slurmd can still deliver the signal
if alive slurmctld && alive slurmd; then
    mapfile -t jobs < <(timeout 10 squeue -h -o %A 2>/dev/null | sort -u)
    if [ "${#jobs[@]}" -gt 0 ]; then
        say "killing jobs: ${jobs[*]}"
        timeout 10 scancel --full --signal=KILL "${jobs[@]}" 2>/dev/null
        timeout 10 scancel "${jobs[@]}" 2>/dev/null
        for _ in $(seq 30); do [ -z "$(timeout 5 squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.5; done
    fi
fi

# job processes still there (a job that ignores SIGTERM while it is COMPLETING, or slurmd gone): our job steps
# carry our SLURM_CONF in their environment; kill each with everything below it
descendants() { local c; for c in $(pgrep -P "$1"); do descendants "$c"; echo "$c"; done; }
for p in $(pgrep -x slurmstepd); do
    tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qx "SLURM_CONF=$CONF" || continue
    mapfile -t tree < <(descendants "$p")
    say "killing leftover job step $(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline")(pid $p${tree[*]:+, below it ${tree[*]}})"
    kill -KILL "${tree[@]}" "$p" 2>/dev/null
done


for d in slurmd slurmctld munged; do
    alive "$d" || continue
    p=$(pid_of "$d")
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$d" ] || { say "pid $p in $d.pid is not $d; not touching it"; continue; }
    kill -TERM "$p"
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$p" 2>/dev/null; then say "$d (pid $p) ignored SIGTERM for 10 s; SIGKILL"; kill -KILL "$p"; fi
    say "stopped $d (pid $p)"
done
rm -f "$STATE"/run/*.pid

if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null || true)" = "$CONF" ]; then rm -f /etc/slurm/slurm.conf; fi
exit 0
