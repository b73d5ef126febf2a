#!/usr/bin/env bash
# Start a single-node Slurm on this machine (munged + slurmctld + slurmd, all on localhost), so that
# `python run.py -m hydra/launcher=submitit_slurm hydra.launcher.partition=debug ...` and the Slurm tests
# (tests/e2e/test_slurm.py) run through a real scheduler without a cluster.
#
#   scripts/slurm/start.sh            # install if needed, start, wait until the node is idle (≤ 60 s)
#   scripts/slurm/stop.sh             # cancel our jobs, stop the three daemons this script started
#
# Idempotent: when our three daemons already run, it only checks that the node is up. Otherwise it
#   1. installs Debian's slurm-wlm and munge with apt (as root) when slurmctld/slurmd/munged are missing;
#   2. writes $LORAVEN_SLURM_DIR/slurm.conf: this host (hostname -s at 127.0.0.1), the CPUs, sockets,
#      cores and RealMemory that `slurmd -C` reads from the machine, proctrack/linuxproc + task/none
#      (no cgroups needed), select/cons_tres with cores and memory as consumables, the default
#      partition `debug` and a higher-priority partition `urgent` whose jobs preempt (requeue) debug
#      jobs (for preemption tests; nothing runs there unless asked), no accounting database (sacct does not work; job completions are logged to
#      $LORAVEN_SLURM_DIR/log/jobcomp.log and finished jobs stay visible in `scontrol show job` for
#      MinJobAge=600 s);
#   3. starts a private munged (own key and socket under the state folder; the system munge is untouched),
#      then slurmctld (job state cleared) and slurmd, as root;
#   4. links /etc/slurm/slurm.conf to that config when no other config is there, so plain `sinfo`,
#      `sbatch` and submitit find it; otherwise export SLURM_CONF=$LORAVEN_SLURM_DIR/slurm.conf.
# On failure it names the daemon or step that failed, prints its log tail, stops what it started and
# exits non-zero.
#
# Environment (all optional):
#   LORAVEN_SLURM_DIR        state folder: config, munge key/socket, spool, state, logs, pid files
#                            [/tmp/loraven-slurm]
#   LORAVEN_SLURM_WAIT       seconds to wait for the node to be idle [60]
#   LORAVEN_SLURM_KILL_WAIT  KillWait: seconds between SIGTERM and SIGKILL when a job is cancelled,
#                            requeued or times out — the grace a job has to save its state [30]
#   LORAVEN_SLURM_REQUEUE_DELAY  seconds a requeued job waits before it may start again (Slurm's
#                            AuthInfo cred_expire; a real cluster's default is 120) [10]
#   LORAVEN_SLURM_GRACE      GraceTime of partition debug: seconds a preempted job runs on after its
#                            first signal [30]
#   LORAVEN_SLURM_PORT       slurmctld port; slurmd uses the next one [6817]
set -euo pipefail

STATE=${LORAVEN_SLURM_DIR:-/tmp/loraven-slurm}
WAIT=${LORAVEN_SLURM_WAIT:-60}
KILL_WAIT=${LORAVEN_SLURM_KILL_WAIT:-30}
PORT=${LORAVEN_SLURM_PORT:-6817}
REQUEUE_DELAY=${LORAVEN_SLURM_REQUEUE_DELAY:-10}
GRACE=${LORAVEN_SLURM_GRACE:-30}
CONF="$STATE/slurm.conf"
HERE=$(cd "$(dirname "$0")" && pwd)
export SLURM_CONF="$CONF"

say() { echo "slurm/start: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

log_tail() { # name, file
    if [ -s "$2" ]; then say "last lines of $1 log ($2):"; tail -n 25 "$2" >&2; else say "$1 log $2 is empty or missing"; fi
}

last_error() { # daemon: its last fatal line, else its last error line
    local f="$STATE/log/$1.log" line
    line=$(grep -E 'fatal' "$f" 2>/dev/null | tail -n 1)
    [ -n "$line" ] || line=$(grep -iE 'error' "$f" 2>/dev/null | tail -n 1)
    echo "$line"
}

up() { # daemon: a daemon forks, then writes its pid file; wait ≤ 10 s for it to be there and alive
    for _ in $(seq 100); do alive "$STATE/run/$1.pid" && return 0; sleep 0.1; done
    local why; why=$(last_error "$1")
    fail "$1 did not come up${why:+; its last error: $why}"
}

fail() { # message; prints every daemon log, stops what was started, exits 1
    say "FAILED: $1"
    log_tail munged "$STATE/log/munged.log"
    log_tail slurmctld "$STATE/log/slurmctld.log"
    log_tail slurmd "$STATE/log/slurmd.log"
    "$HERE/stop.sh" >&2 || true
    exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and runs slurmd, which starts jobs as their users)"

# --- 1. install ---------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
    command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and there is no apt-get to install them"
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$STATE/log"
    apt_log="$STATE/log/apt.log"
    apt_install() { apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$apt_log" 2>&1; }
    if ! apt_install; then
        say "apt-get install failed; running apt-get update and trying again"
        apt-get update -q >>"$apt_log" 2>&1 || true
        apt_install || { tail -n 30 "$apt_log" >&2; die "apt-get install slurm-wlm munge failed (log: $apt_log)"; }
    fi
fi

# --- already running? ---------------------------------------------------------------------------------
node_state() { timeout 5 sinfo -h -N -o '%t' 2>/dev/null | head -n 1; }
if alive "$STATE/run/munged.pid" && alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid"; then
    say "already running (state folder $STATE)"
else
    # half a cluster (a daemon died, or a previous start failed): stop the rest and start clean
    "$HERE/stop.sh" >/dev/null 2>&1 || true
    mkdir -p "$STATE"/{munge,run,log,ctld,spool}
    chmod 755 "$STATE/munge" # the socket must be reachable by every user; the key file itself is 0600

    # --- 2. config ------------------------------------------------------------------------------------
    host=$(hostname -s)
    # slurmd -C prints this machine as a node line: NodeName=h CPUs=.. Boards=.. SocketsPerBoard=..
    # CoresPerSocket=.. ThreadsPerCore=.. RealMemory=..; we keep it minus NodeName (set below).
    hw=$(slurmd -C 2>/dev/null | head -n 1) || true
    [[ "$hw" == NodeName=* ]] || die "slurmd -C did not describe this machine (got: '${hw}')"
    hw=${hw#NodeName=* }
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    [ -n "$cpus" ] && [ -n "$mem" ] || die "could not read CPUs/RealMemory from slurmd -C: '$hw'"
    cat >"$CONF.tmp" <<EOF
# written by scripts/slurm/start.sh (loraven): a single-node test cluster on $host
ClusterName=loraven
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also the delay before a requeued job may start again (Slurm's default: 120 s)
AuthInfo=socket=$STATE/munge/munge.socket,cred_expire=$REQUEUE_DELAY
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: processes are tracked by parent pid, tasks are not bound
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# look at pending jobs every 2 s (defaults 60/30 s): a requeued job starts again soon after it may
SchedulerParameters=sched_interval=2,bf_interval=2
# no slurmdbd: sacct is unavailable; completed jobs go to a text log and stay in slurmctld for MinJobAge s
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.log
MinJobAge=600
KillWait=$KILL_WAIT
ReturnToService=2
SlurmdTimeout=60
# preemption as on a shared cluster: a job in partition urgent requeues the debug jobs in its way; they get
# the user signal of their --signal (submitit: USR2) at once, then SIGTERM..SIGKILL after GraceTime
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host $hw State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$((mem / cpus)) PriorityTier=1 GraceTime=$GRACE
PartitionName=urgent Nodes=$host MaxTime=INFINITE State=UP DefMemPerCPU=$((mem / cpus)) PriorityTier=2 PreemptMode=OFF
EOF
    mv "$CONF.tmp" "$CONF"

    # --- 4. make the config the default for clients, when no other config is there -----------------------
    if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf || true)" = "$CONF" ]; then
        mkdir -p /etc/slurm && ln -sfn "$CONF" /etc/slurm/slurm.conf
    else
        say "/etc/slurm/slurm.conf is another cluster's config; left alone: export SLURM_CONF=$CONF"
    fi

    # --- 3. daemons -----------------------------------------------------------------------------------
    key="$STATE/munge/munge.key"
    if [ ! -s "$key" ]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile="$key" >/dev/null 2>&1; fi
        [ -s "$key" ] || dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
        chmod 600 "$key"
    fi
    munged --force --key-file="$key" --socket="$STATE/munge/munge.socket" --pid-file="$STATE/run/munged.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed" \
        || fail "munged did not start"
    up munged
    for _ in $(seq 50); do munge -S "$STATE/munge/munge.socket" -n 2>/dev/null | unmunge -S "$STATE/munge/munge.socket" >/dev/null 2>&1 && break; sleep 0.1; done
    munge -S "$STATE/munge/munge.socket" -n | unmunge -S "$STATE/munge/munge.socket" >/dev/null 2>&1 \
        || fail "munged runs but a munge/unmunge round trip through $STATE/munge/munge.socket fails"
    slurmctld -c >/dev/null 2>&1 || fail "slurmctld exited at start (see its log)"
    up slurmctld
    slurmd -c >/dev/null 2>&1 || fail "slurmd exited at start (see its log)"
    up slurmd
fi

# --- wait until the node is idle ----------------------------------------------------------------------
deadline=$((SECONDS + WAIT))
while :; do
    for d in munged slurmctld slurmd; do
        alive "$STATE/run/$d.pid" && continue
        why=$(last_error "$d")
        fail "$d stopped running${why:+; its last error: $why}"
    done
    st=$(node_state || true)
    case "$st" in idle | mix | alloc | comp) break ;; esac # up (comp: a job is finishing)
    if [[ "$st" == drain* || "$st" == down* ]]; then
        reason=$(sinfo -h -N -o '%E' 2>/dev/null | head -n 1)
        # a node down from a previous life comes back when told to; anything else is a real failure
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        [ $SECONDS -lt $deadline ] || fail "node is $st: $reason"
    fi
    [ $SECONDS -lt $deadline ] || fail "node not idle after ${WAIT} s (sinfo state: '${st:-no answer from slurmctld}')"
    sleep 0.5
done
say "ready: $(sinfo -h -N -p debug -o '%N %t cpus=%c mem=%mMB') partitions: $(sinfo -h -o %P | tr '\n' ' ')(config $CONF)"
