#!/usr/bin/env bash
# ci/slurm/cluster.sh -- a throw-away, single-node SLURM cluster for tests and CI.
#
#   bash ci/slurm/cluster.sh up       install (if needed), configure and start munge + slurmctld + slurmd
#   bash ci/slurm/cluster.sh status   show our daemons, sinfo and squeue
#   bash ci/slurm/cluster.sh down     cancel our jobs, stop the daemons we started (by pid file only)
#
# Requirements: Debian/Ubuntu, run as root (CI containers, a scratch VM). It is NOT meant for a
# machine that already belongs to a real SLURM cluster: it refuses to overwrite a slurm.conf it did
# not write itself (set MESMERIZE_SLURM_FORCE=1 to override).
#
# Environment:
#   MESMERIZE_SLURM_DIR        state dir (pid files, logs, spool, ctld state); default /tmp/mesmerize-slurm
#   MESMERIZE_SLURM_PARTITION  name of the (default) partition; default "debug"
#   MESMERIZE_SLURM_TIMEOUT    seconds to wait for the node to become idle; default 60
#
# The cluster has no slurmdbd (AccountingStorageType=accounting_storage/none): `sacct` fails and
# there are no accounts. Snakemake's slurm executor must therefore be told to poll with `squeue`
# (profiles/slurm/config.yaml does this), which in turn needs finished jobs to stay visible in
# squeue long enough: MinJobAge (600 s here) >= 3 x slurm-init-seconds-before-status-checks.
set -euo pipefail

STATE=${MESMERIZE_SLURM_DIR:-/tmp/mesmerize-slurm}
PARTITION=${MESMERIZE_SLURM_PARTITION:-debug}
TIMEOUT=${MESMERIZE_SLURM_TIMEOUT:-60}
CONF_DIR=/etc/slurm                  # client tools (sinfo, sbatch, ...) read $CONF_DIR/slurm.conf
CONF=$CONF_DIR/slurm.conf
MARK="# managed-by: mesmerize-helpers ci/slurm/cluster.sh"
PIDS=$STATE/pids
LOGS=$STATE/logs
MUNGE_DIR=$STATE/munge               # owned by the munge user: its pid file lives here
OWN_MUNGE=$STATE/munge-started-by-us # marker: we started munged, so `down` may stop it

say() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() { printf '[cluster.sh] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- pid-file helpers
# pid_of FILE NAME: print the pid in FILE if that process is alive and its command name is NAME
pid_of() {
    local file=$1 name=$2 pid
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' < "$file")
    [[ -n $pid ]] || return 1
    [[ -d /proc/$pid ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    echo "$pid"
}

# stop_by_pidfile FILE NAME: SIGTERM, wait up to 10 s, then SIGKILL; only ever the recorded pid
stop_by_pidfile() {
    local file=$1 name=$2 pid i
    if ! pid=$(pid_of "$file" "$name"); then
        say "$name: not running"
        rm -f "$file"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        say "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
    say "$name: stopped (pid $pid)"
}

# retry SECONDS CMD...: run CMD every 0.2 s until it succeeds or SECONDS have passed
retry() {
    local secs=$1 end
    shift
    end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || return 1
        sleep 0.2
    done
}

need_root() { [[ $(id -u) == 0 ]] || die "must run as root (it installs packages and starts daemons)"; }

# ---------------------------------------------------------------- install
install_packages() {
    local missing=() bin
    for bin in slurmctld slurmd sbatch sinfo munged; do
        command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    say "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
    # Keep the packages' maintainer scripts from starting daemons: we want to own every pid we
    # stop later. policy-rc.d exit code 101 = "action forbidden" for invoke-rc.d.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    local rc=0
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                slurmctld slurmd slurm-client munge
    } > "$STATE/apt.log" 2>&1 || rc=$?
    if ((added_policy)); then rm -f "$policy"; fi
    if ((rc != 0)); then
        tail -n 20 "$STATE/apt.log" >&2
        die "apt-get failed (exit $rc); full log in $STATE/apt.log"
    fi
}

# ---------------------------------------------------------------- configuration
node_name() { hostname -s; }

write_slurm_conf() {
    local node cpus mem hw
    node=$(node_name)
    # slurmd -C reports what slurmd itself will detect; configuring more than that would put the
    # node into the INVAL/DRAIN state, so take CPUs and memory from it.
    hw=$(slurmd -C 2>/dev/null | head -n 1 || true)
    cpus=$(sed -n 's/.*[[:space:]]CPUs=\([0-9]*\).*/\1/p' <<< "$hw")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<< "$hw")
    [[ -n $cpus ]] || cpus=$(nproc)
    [[ -n $mem ]] || mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    mem=$((mem * 9 / 10)) # leave headroom: free memory fluctuates, never advertise more than exists

    mkdir -p "$CONF_DIR"
    if [[ -e $CONF ]] && ! grep -qxF "$MARK" "$CONF" && [[ ${MESMERIZE_SLURM_FORCE:-0} != 1 ]]; then
        die "$CONF exists and was not written by this script; refusing to overwrite it (MESMERIZE_SLURM_FORCE=1 to override)"
    fi

    local tmp=$STATE/slurm.conf.new
    cat > "$tmp" <<EOF
$MARK
# One node on the loopback interface; no cgroups, no accounting daemon, no systemd.
ClusterName=mesmerize-ci
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# jobs that ask for no memory get 1 GB per CPU instead of the whole node
DefMemPerCPU=1024
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# Finished jobs stay in squeue for 10 minutes. Snakemake's slurm executor polls with squeue
# (no sacct without slurmdbd) and only does so if MinJobAge >= 3 x its initial status delay.
MinJobAge=600
InactiveLimit=0
KillWait=5
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ -e $CONF ]] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        return 1 # unchanged
    fi
    mv -f "$tmp" "$CONF"
    chmod 644 "$CONF"
    say "wrote $CONF (node $node: CPUs=$cpus RealMemory=${mem}M, partition $PARTITION)"
    return 0 # changed
}

ensure_hostname_resolves() {
    local node
    node=$(node_name)
    if ! getent hosts "$node" >/dev/null; then
        say "mapping hostname $node to 127.0.0.1 in /etc/hosts"
        printf '127.0.0.1\t%s\n' "$node" >> /etc/hosts
    fi
}

# ---------------------------------------------------------------- daemons
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    if munge_works; then
        if pid_of "$MUNGE_DIR/munged.pid" munged >/dev/null; then
            say "munged: already running (ours, pid $(cat "$MUNGE_DIR/munged.pid"))"
        else
            say "munged: a munge daemon not started by us is answering; using it"
        fi
        return 0
    fi
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$key" >/dev/null
        else
            head -c 1024 /dev/urandom > "$key"
        fi
    fi
    # munged refuses to run with insecure permissions / wrong owners
    mkdir -p /run/munge /var/lib/munge /var/log/munge "$MUNGE_DIR"
    chown munge:munge /etc/munge "$key" /run/munge /var/lib/munge /var/log/munge "$MUNGE_DIR"
    chmod 700 /etc/munge
    chmod 400 "$key"
    chmod 755 /run/munge
    rm -f "$MUNGE_DIR/munged.pid"
    runuser -u munge -- munged --pid-file="$MUNGE_DIR/munged.pid" \
        || die "munged failed to start (see /var/log/munge/munged.log)"
    retry 10 munge_works || die "munged started but munge -n | unmunge does not work"
    : > "$OWN_MUNGE"
    say "munged: started (pid $(cat "$MUNGE_DIR/munged.pid"))"
}

start_slurmctld() {
    if pid_of "$PIDS/slurmctld.pid" slurmctld >/dev/null; then
        say "slurmctld: already running (pid $(cat "$PIDS/slurmctld.pid"))"
        return 0
    fi
    rm -f "$PIDS/slurmctld.pid"
    # -c: forget jobs from an earlier incarnation of this throw-away cluster
    slurmctld -c || die "slurmctld failed to start; see $LOGS/slurmctld.log"
    retry 20 scontrol ping || { tail -n 20 "$LOGS/slurmctld.log" >&2; die "slurmctld does not answer scontrol ping"; }
    say "slurmctld: started (pid $(cat "$PIDS/slurmctld.pid"))"
}

start_slurmd() {
    if pid_of "$PIDS/slurmd.pid" slurmd >/dev/null; then
        say "slurmd: already running (pid $(cat "$PIDS/slurmd.pid"))"
        return 0
    fi
    rm -f "$PIDS/slurmd.pid"
    slurmd -N "$(node_name)" || die "slurmd failed to start; see $LOGS/slurmd.log"
    retry 20 test -s "$PIDS/slurmd.pid" || die "slurmd wrote no pid file; see $LOGS/slurmd.log"
    say "slurmd: started (pid $(cat "$PIDS/slurmd.pid"))"
}

node_state() { sinfo -h -N -n "$(node_name)" -o '%T' 2>/dev/null | head -n 1; }

wait_node_idle() {
    local node state="" end resumed=0
    node=$(node_name)
    end=$((SECONDS + TIMEOUT))
    while ((SECONDS < end)); do
        state=$(node_state || true)
        case $state in
            idle | mixed | allocated | completing) say "node $node is $state (partition $PARTITION)"; return 0 ;;
            drain* | down* | inval* | fail*)
                # e.g. left drained by an earlier run; with a fresh config this is safe to clear
                if ((!resumed)); then
                    scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
                    resumed=1
                fi
                ;;
        esac
        sleep 0.25
    done
    {
        echo "--- sinfo -N -l:"; sinfo -N -l 2>&1 || true
        echo "--- scontrol show node:"; scontrol show node "$node" 2>&1 || true
        echo "--- tail $LOGS/slurmctld.log:"; tail -n 20 "$LOGS/slurmctld.log" 2>&1 || true
        echo "--- tail $LOGS/slurmd.log:"; tail -n 20 "$LOGS/slurmd.log" 2>&1 || true
    } >&2
    die "node $node did not become idle within ${TIMEOUT}s (last state: '${state:-unknown}')"
}

# ---------------------------------------------------------------- commands
cmd_up() {
    need_root
    local t0=$SECONDS
    mkdir -p "$STATE" "$PIDS" "$LOGS" "$STATE/ctld" "$STATE/slurmd"
    chmod 755 "$STATE"
    install_packages
    ensure_hostname_resolves
    if write_slurm_conf; then
        # new or changed config: restart daemons of ours that run with the old one
        stop_by_pidfile "$PIDS/slurmd.pid" slurmd >/dev/null 2>&1
        stop_by_pidfile "$PIDS/slurmctld.pid" slurmctld >/dev/null 2>&1
    fi
    rm -f /etc/slurm/cgroup.conf
    start_munge
    start_slurmctld
    start_slurmd
    wait_node_idle
    say "up in $((SECONDS - t0)) s; state in $STATE"
}

no_jobs_left() { [[ -z $(squeue -h -t PD,R,CG,S -o %i 2>/dev/null) ]]; }

cmd_down() {
    need_root
    if pid_of "$PIDS/slurmctld.pid" slurmctld >/dev/null; then
        # cancel jobs still queued/running on this private cluster, so no job steps outlive it
        local jobs
        jobs=$(squeue -h -o '%i' -t PD,R,CG,S 2>/dev/null | tr '\n' ' ' || true)
        if [[ -n ${jobs// /} ]]; then
            say "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            retry 15 no_jobs_left || say "jobs still listed after 15 s: $(squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
        fi
    fi
    stop_by_pidfile "$PIDS/slurmd.pid" slurmd
    stop_by_pidfile "$PIDS/slurmctld.pid" slurmctld
    if [[ -e $OWN_MUNGE ]]; then
        stop_by_pidfile "$MUNGE_DIR/munged.pid" munged
        rm -f "$OWN_MUNGE"
    else
        say "munged: not started by us; left alone"
    fi
}

cmd_status() {
    local rc=0 p name file
    for name in munged slurmctld slurmd; do
        case $name in
            munged) file=$MUNGE_DIR/munged.pid ;;
            *) file=$PIDS/$name.pid ;;
        esac
        if p=$(pid_of "$file" "$name"); then
            echo "$name: running (pid $p)"
        else
            echo "$name: not running"
            [[ $name == munged ]] && munge_works && echo "  (a munge daemon not started by us answers)" && continue
            rc=1
        fi
    done
    if command -v sinfo >/dev/null; then
        echo "--- sinfo"; sinfo 2>&1 || rc=1
        echo "--- squeue"; squeue 2>&1 || rc=1
    fi
    return $rc
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
