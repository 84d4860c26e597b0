#!/usr/bin/env bash
# A real two-node Slurm cluster on this one machine, for tests/launch/test_slurm.py (and for trying slurm/*.sh):
#
#     bash tests/slurm_cluster.sh start DIR     # prints `export SLURM_CONF=DIR/slurm.conf`
#     SLURM_CONF=DIR/slurm.conf sbatch --nodes=2 slurm/train.sh ...
#     bash tests/slurm_cluster.sh stop DIR      # stops the daemons it started, by PID
#
# Needs root (the daemons run as root: SlurmUser=root). Installs Debian's Slurm 22.05 and munge when they
# are missing (~8 s with apt reachable). No systemd here, so munged, slurmctld and two slurmd are started
# directly: nodes n1 and n2 are two slurmd processes on this host (ports 17001-17002, NodeAddr
# 127.0.0.1), each with its own spool. Tasks are bound to cores (TaskPlugin=task/affinity,
# TaskPluginParam=Cores) as on a real cluster, so a step's processes see the CPUs it was given. Everything
# else lives in DIR; only munged uses the system's /etc/munge key and /run/munge socket, and is left
# running if it was already (then not ours to stop). slurmd logs at debug level (DIR/log/slurmd-n1.log,
# -n2.log) so that tests see when a node revoked a job's credential ("credential for job N revoked").
# A job starts ~1-2 s after the daemons are up.
set -euo pipefail
cmd=${1:?usage: slurm_cluster.sh start|stop DIR}
DIR=$(realpath -m "${2:?usage: slurm_cluster.sh start|stop DIR}")

stop() {
    [ -f "$DIR/pids" ] || return 0
    # slurmd first so that running job steps end, then the controller, then munged if we started it.
    for pid in $(tac "$DIR/pids"); do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $(cat "$DIR/pids"); do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -f "$DIR/pids"
}

if [ "$cmd" = stop ]; then
    stop
    exit 0
fi
[ "$cmd" = start ] || { echo "usage: slurm_cluster.sh start|stop DIR" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "slurm_cluster.sh: needs root (SlurmUser=root, munged as user munge)" >&2; exit 3; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge; }
    } >"${TMPDIR:-/tmp}/slurm_cluster_apt.log" 2>&1 \
        || { echo "slurm_cluster.sh: apt-get install of slurm failed (see ${TMPDIR:-/tmp}/slurm_cluster_apt.log)" >&2; exit 4; }
fi

mkdir -p "$DIR"/{state,log} "$DIR"/spool/n1 "$DIR"/spool/n2
: >"$DIR/pids"
HOST=$(hostname -s)
# The machine's CPUs, not $OMP_NUM_THREADS (which `nproc` prints when it is set).
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-16817}
cat >"$DIR/slurm.conf" <<EOF
ClusterName=ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmdDebug=debug
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
TaskPluginParam=Cores
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1
MailProg=/bin/true
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=n[1-2] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[17001-17002] CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
export SLURM_CONF="$DIR/slurm.conf"

if ! pgrep -x munged >/dev/null; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    [ -f /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; }
    runuser -u munge -- munged --foreground >"$DIR/log/munged.log" 2>&1 &
    echo $! >>"$DIR/pids"
    for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done
fi

slurmctld -D -f "$SLURM_CONF" >"$DIR/log/slurmctld.out" 2>&1 &
echo $! >>"$DIR/pids"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
for node in n1 n2; do
    slurmd -D -N "$node" -f "$SLURM_CONF" >"$DIR/log/slurmd-$node.out" 2>&1 &
    echo $! >>"$DIR/pids"
done
for _ in $(seq 300); do
    [ "$(sinfo -h -N -o '%t' 2>/dev/null | grep -c -E '^(idle|mix|alloc)')" = 2 ] && break
    sleep 0.1
done
if [ "$(sinfo -h -N -o '%t' 2>/dev/null | grep -c -E '^(idle|mix|alloc)')" != 2 ]; then
    echo "slurm_cluster.sh: nodes did not come up:" >&2
    sinfo -N >&2 || true
    tail -n 20 "$DIR"/log/*.log >&2 || true
    stop
    exit 5
fi
echo "export SLURM_CONF=$SLURM_CONF"
