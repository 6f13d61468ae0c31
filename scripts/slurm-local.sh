#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests and CI.
#
#   scripts/slurm-local.sh install        # Debian's slurmctld/slurmd/slurm-client/munge (needs root)
#   scripts/slurm-local.sh start DIR      # config, state and logs under DIR; prints `export SLURM_CONF=…`
#   scripts/slurm-local.sh stop DIR       # scontrol shutdown, stop munged, wait (capped)
#
# The node is named `localhost` and the partition `debug`; no cgroups, accounting or systemd.
set -euo pipefail

cmd=${1:?usage: slurm-local.sh install|start DIR|stop DIR}

case "$cmd" in
install)
    if command -v slurmctld >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
    ;;
start)
    dir=$(realpath -m "${2:?state folder}")
    mkdir -p "$dir"/{state,spool,log}
    [ -f /etc/munge/munge.key ] || mungekey -c
    install -d -o munge -g munge -m 755 /run/munge
    if ! [ -S /run/munge/munge.socket.2 ] || ! pgrep -x munged >/dev/null; then
        runuser -u munge -- /usr/sbin/munged
    fi
    cat >"$dir/slurm.conf" <<CONF
ClusterName=retain-local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=localhost CPUs=$(nproc) RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$SLURM_CONF" -c
    slurmd -f "$SLURM_CONF" -N localhost
    for _ in $(seq 1 60); do
        state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
        [ "$state" = idle ] && break
        sleep 0.5
    done
    if [ "$state" != idle ]; then
        echo "slurm-local: node did not become idle (state: ${state:-none}); see $dir/log" >&2
        exit 1
    fi
    echo "export SLURM_CONF=$SLURM_CONF"
    ;;
stop)
    dir=$(realpath -m "${2:?state folder}")
    export SLURM_CONF="$dir/slurm.conf"
    scontrol shutdown >/dev/null 2>&1 || true
    for pidfile in "$dir/slurmctld.pid" "$dir/slurmd.pid"; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ -f /run/munge/munged.pid ]; then
        pid=$(cat /run/munge/munged.pid)
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
    fi
    ;;
*)
    echo "usage: slurm-local.sh install|start DIR|stop DIR" >&2
    exit 2
    ;;
esac
