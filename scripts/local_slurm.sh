#!/usr/bin/env bash
# A one-node SLURM cluster on this machine: to try normexp's SLURM path (launcher=slurm) before a real cluster, and
# for the test suite's `slurm` tests. Debian's slurmctld, slurmd and munge, and slurmdbd on a private MariaDB so
# that `sacct` answers (submitit polls job states with it; without accounting every poll warns "Bypassing sacct
# error" and a job killed before it writes its result is never seen to end). One node with this machine's cores
# and memory in one partition, `debug`; no cgroups (proctrack/linuxproc, task/none), so it runs in a container.
#
#   scripts/local_slurm.sh start    install the packages if missing (apt-get, as root), write the configs, start
#                                   the daemons, and wait until the node takes jobs (exit status 1 if it does not)
#   scripts/local_slurm.sh status   the node and the queue (exit status 1 if the cluster is down)
#   scripts/local_slurm.sh stop     cancel every job and stop the daemons this script started
#
# Configs go to /etc/slurm/ (one this script did not write is never replaced); state, logs and pid files to
# $NORMEXP_SLURM_DIR (default /var/lib/normexp-slurm; delete it after `stop` to forget jobs and accounting).
set -euo pipefail

STATE=${NORMEXP_SLURM_DIR:-/var/lib/normexp-slurm}
SLURM_CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARKER="# written by normexp's scripts/local_slurm.sh"
PACKAGES=(slurmctld slurmd slurmdbd slurm-client munge mariadb-server)
DB_SOCKET=/run/mysqld/mysqld.sock # where the MariaDB client library (slurmdbd's) looks for localhost

die() {
    echo "local_slurm: $*" >&2
    exit 1
}

install_packages() {
    local missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} = 0 ] && return
    [ "$(id -u)" = 0 ] || die "missing Debian packages ${missing[*]}: run this as root to install them with apt-get"
    echo "local_slurm: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } \
        || die "apt-get could not install ${missing[*]}"
}

# Write $1 from stdin unless a config this script did not write is there.
write_config() {
    if [ -f "$1" ] && ! grep -qF "$MARKER" "$1"; then
        die "$1 was not written by this script: this machine has its own SLURM setup; use that one"
    fi
    mkdir -p "$(dirname "$1")"
    { echo "$MARKER"; cat; } >"$1"
}

write_configs() {
    local node
    node=$(hostname -s)
    mkdir -p "$STATE"/{ctld,d,log}
    # The node: CPUs, sockets, cores and memory as slurmd detects them. SlurmUser=root: the daemons run as the user
    # who starts them. cred_expire: a requeued job waits this long before it starts again (SLURM's default, 120 s,
    # is sized for clusters whose nodes clean up slowly).
    write_config "$SLURM_CONF" <<EOF
ClusterName=normexp-local
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=15
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
$(slurmd -C | head -n 1)
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    write_config "$DBD_CONF" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
    chmod 600 "$DBD_CONF"
}

# Whether the daemon whose pid file is $1 runs.
running() {
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Wait until "$@" succeeds (up to 30 s); otherwise show the logs and fail.
wait_for() {
    local what=$1
    shift
    for _ in $(seq 60); do
        "$@" >/dev/null 2>&1 && return
        sleep 0.5
    done
    echo "local_slurm: $what did not come up; the logs under $STATE:" >&2
    tail -n 15 "$STATE"/log/*.log "$STATE"/db/*.err >&2 2>/dev/null || true
    exit 1
}

start_munge() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return # a munged of this machine's own serves us too
    [ -s /etc/munge/munge.key ] || { mungekey --create && chown munge:munge /etc/munge/munge.key; }
    mkdir -p "$STATE/munge" /run/munge
    chown munge:munge "$STATE/munge" /run/munge
    runuser -u munge -- munged --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log"
    wait_for munged sh -c "munge -n | unmunge"
}

start_database() {
    running "$STATE/db/mariadbd.pid" && return
    mkdir -p "$STATE/db" "$(dirname "$DB_SOCKET")"
    chown mysql:mysql "$STATE/db" "$(dirname "$DB_SOCKET")"
    if [ ! -d "$STATE/db/mysql" ]; then
        mariadb-install-db --user=mysql --datadir="$STATE/db" --auth-root-authentication-method=socket \
            --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: $STATE/log"
    fi
    setsid mariadbd --user=mysql --datadir="$STATE/db" --socket="$DB_SOCKET" --skip-networking \
        --pid-file="$STATE/db/mariadbd.pid" --log-error="$STATE/db/mariadbd.err" \
        --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
    wait_for MariaDB mariadb --socket="$DB_SOCKET" -e "select 1"
}

start() {
    install_packages
    write_configs
    start_munge
    start_database
    running "$STATE/slurmdbd.pid" || slurmdbd
    wait_for slurmdbd sacctmgr --noheader list cluster
    running "$STATE/slurmctld.pid" || slurmctld
    running "$STATE/slurmd.pid" || slurmd
    # the node takes jobs, and the controller has registered the cluster with slurmdbd (sacct answers)
    wait_for "the node" sh -c "sinfo --noheader --responding --states=idle,mixed,allocated --format=%N | grep -q ."
    wait_for "accounting" sh -c "sacctmgr --noheader --parsable2 list cluster format=cluster | grep -qx normexp-local"
    echo "local_slurm: up: $(sinfo --noheader --format='partition %P, node %N, %c CPUs, %m MB')"
}

# Stop the daemon whose pid file is $1, and wait until it has.
stop_daemon() {
    running "$1" || return 0
    local pid
    pid=$(cat "$1")
    kill "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    die "the daemon with pid $pid ($1) did not stop"
}

stop() {
    running "$STATE/slurmctld.pid" && scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for pid_file in slurmd.pid slurmctld.pid slurmdbd.pid db/mariadbd.pid munge/munged.pid; do
        stop_daemon "$STATE/$pid_file"
    done
    echo "local_slurm: stopped"
}

status() {
    running "$STATE/slurmctld.pid" || die "down (scripts/local_slurm.sh start starts it)"
    sinfo
    squeue
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start | stop | status" ;;
esac
