#!/usr/bin/env bash
# Starts a single-node SLURM cluster on this Debian/Ubuntu machine (root needed): munge for
# authentication, slurmctld + slurmd under the machine's own hostname, and one CPU-only partition
# (no gres) named $KDX_SLURM_PARTITION (default: cpu). Idempotent: a running cluster is left as is.
#
#   sudo scripts/slurm-up.sh            # or: make slurm-up
#   sinfo                               # the node shows "idle" within seconds
#
# Exit status 3 means "cannot start here" (not root, or no apt to install the packages); the test
# suite skips its SLURM tests on that status and prints the script's reason.
set -euo pipefail

PARTITION="${KDX_SLURM_PARTITION:-cpu}"
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
CONF=/etc/slurm/slurm.conf
HOST="$(hostname -s)"

cannot() { echo "slurm-up: cannot start SLURM here: $*" >&2; exit 3; }

if [ "$(id -u)" != 0 ]; then cannot "needs root (run it with sudo)"; fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || cannot "slurm-wlm/munge are not installed and apt-get is missing"
    echo "slurm-up: installing slurm-wlm and munge with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || cannot "apt-get update failed (no network to the package mirror?)"
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null \
        || cannot "apt-get install slurm-wlm munge failed"
fi

# ---- munge: one key, the daemon running as user munge --------------------------------------------
if ! pgrep -u munge -x munged >/dev/null; then
    mkdir -p /etc/munge /var/log/munge /var/lib/munge /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge
    chmod 400 /etc/munge/munge.key
    chmod 700 /etc/munge
    su -s /bin/sh munge -c /usr/sbin/munged
fi

# ---- slurm.conf: this host, its CPUs and memory as slurmd sees them, one partition ---------------
NODE_LINE="$(slurmd -C | head -n 1)"   # NodeName=<host> CPUs=... RealMemory=...
mkdir -p /etc/slurm "$STATE_DIR" "$SPOOL_DIR" /var/log/slurm
WANT=$(cat <<CONF
# Written by kdx scripts/slurm-up.sh: a single-node, CPU-only cluster without accounting.
ClusterName=kdx
SlurmctldHost=$HOST
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Requeued jobs (scontrol requeue, preemption) start again without waiting.
JobRequeue=1
MinJobAge=600
InactiveLimit=0
KillWait=10
$NODE_LINE State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
)
RESTART=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$WANT" ]; then
    printf '%s\n' "$WANT" > "$CONF"
    RESTART=1
fi

start_daemon() {   # name, command: a daemon started by this script (its pid file) reads a new conf
    if [ "$RESTART" = 1 ] && [ -s "/run/$1.pid" ]; then
        kill "$(cat "/run/$1.pid")" 2>/dev/null || true
        sleep 1
    fi
    pgrep -x "$1" >/dev/null || $2
}
start_daemon slurmctld "/usr/sbin/slurmctld"
start_daemon slurmd "/usr/sbin/slurmd"

# The node comes up within seconds; a node left "down" by an earlier run is resumed.
for _ in $(seq 1 30); do
    STATE="$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -n 1 || true)"
    case "$STATE" in
        idle|mix|alloc) echo "slurm-up: node $HOST is $STATE in partition $PARTITION"; exit 0 ;;
        down*|drain*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "slurm-up: the node did not become idle; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
