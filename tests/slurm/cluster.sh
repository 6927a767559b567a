#!/usr/bin/env bash
# A real Slurm cluster on THIS host, one node or two, for the `slurm` tests and CI (issues #14, #19).
#
#   bash tests/slurm/cluster.sh up [--nodes 2]  start munged, slurmctld, the slurmd(s) (idempotent; a
#                                               running cluster of another size is restarted); prints the
#                                               env to use
#   bash tests/slurm/cluster.sh status  exit 0 when the daemons run and the controller answers
#   bash tests/slurm/cluster.sh down    cancel every job, stop every daemon and job step it started; remove
#                                       the second node's network namespace and veth link
#   bash tests/slurm/cluster.sh env     print the `export ...` lines (for eval)
#
# Two nodes (--nodes 2; CI uses this, see .ci/run): a second slurmd in its own network + UTS + mount
# namespace looks like a second host to Slurm and to torchrun.
# - node1 is this host's network namespace, node2 the namespace $NETNS; a veth pair ($VETH, the same
#   name at both ends, so one GLOO_SOCKET_IFNAME works on both nodes) joins them on the private /24
#   $NET.0 (.1 = node1, .2 = node2). Traffic stays between the two namespaces (and loopback).
# - each slurmd gets its own /etc/hosts (node1, node2 at their veth addresses) by a bind mount inside
#   its own mount namespace; the machine's /etc/hosts is never edited. Without it node1 may resolve to
#   loopback on the node itself, and a 2-node run hangs.
# - node2's slurmd starts through `nsenter --net=/run/netns/$NETNS`, not `ip netns exec`: the latter
#   remounts /sys and slurmd 22.05 then fails ("No filesystem mounted on /sys/fs/cgroup").
# - partition `debug` (the default) is node1 alone, so one-node tests behave as on the one-node cluster;
#   partition `$MULTI_PARTITION` holds both nodes for the multi-node tests.
#
# Needs root and Debian's `slurm-wlm` + `munge` (22.05): .ci/run installs them. Everything lives in
# $MDTUI_SLURM_DIR (default /tmp/mdtui-slurm): generated slurm.conf/gres.conf, munge key and socket, state,
# spool, logs, pid files. Nothing under /etc is read or written, so a real cluster config on the
# machine is never touched; clients find this one through SLURM_CONF alone.
#
# Choices (why):
# - proctrack/linuxproc + task/none: no cgroup setup needed inside containers.
# - 4 `gpu` GRES backed by fake device files (char devices with /dev/null's numbers): Slurm schedules
#   --gres=gpu:N and sets CUDA_VISIBLE_DEVICES for the job as on a real GPU node, without any GPU.
# - No slurmdbd (it needs MySQL/MariaDB): AccountingStorageType=accounting_storage/none, so `sacct`
#   does not work. Job states come from squeue/scontrol, which keep finished jobs for MinJobAge=3600 s,
#   and jobcomp/filetxt records every finished job in jobcomp.txt.
# - Fast scheduling (sched_interval=1) and KillWait=5 keep tests short; JobRequeue=1 makes jobs
#   requeueable; ReturnToService=1 keeps a node a test set DOWN down until `state=resume`.
# - cred_expire=10: Slurm holds a requeued job until its launch credential expires (BeginTime,
#   default 120 s); 10 s keeps requeue tests short.
set -euo pipefail

DIR="${MDTUI_SLURM_DIR:-/tmp/mdtui-slurm}"
CONF="$DIR/etc/slurm.conf"
GPUS="${MDTUI_SLURM_GPUS:-4}"
NET="${MDTUI_SLURM_NET:-10.231.17}"  # the second node's private /24 (node1 = .1, node2 = .2)
NETNS="${MDTUI_SLURM_NETNS:-mdtui-node2}"
VETH="${MDTUI_SLURM_VETH:-mdtui0}"
MULTI_PARTITION=multi
export SLURM_CONF="$CONF"

die() { echo "cluster.sh: $*" >&2; exit 2; }
log() { echo "cluster.sh: $*" >&2; }

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# The layout of the cluster that runs (or is to run): how many nodes, and their names.
running_nodes() { cat "$DIR/run/nodes" 2>/dev/null || echo 0; }
node_names() {  # node_names COUNT
    if [[ "$1" == 2 ]]; then echo "node1 node2"; else hostname -s; fi
}

need_tools() {
    [[ "$(id -u)" == 0 ]] || die "must run as root (slurmd runs jobs as their user; munged and slurmd need root)"
    local t
    for t in munged slurmctld slurmd sbatch squeue scontrol sinfo; do
        command -v "$t" >/dev/null 2>&1 || [[ -x "/usr/sbin/$t" ]] \
            || die "$t not found: install the Debian packages slurm-wlm and munge (apt-get install -y slurm-wlm munge)"
    done
}

sbin() { if command -v "$1" >/dev/null 2>&1; then command -v "$1"; else echo "/usr/sbin/$1"; fi; }

healthy() {  # healthy [COUNT]: the cluster runs (with COUNT nodes, when given)
    local count n
    count="$(running_nodes)"
    [[ "$count" != 0 && ( -z "${1:-}" || "$1" == "$count" ) ]] || return 1
    pid_alive "$DIR/run/munged.pid" && pid_alive "$DIR/run/slurmctld.pid" || return 1
    for n in $(node_names "$count"); do pid_alive "$DIR/run/slurmd-$n.pid" || return 1; done
    # The controller answers and knows the nodes. Their state does not matter: a test may have set one
    # DOWN on purpose, and restarting the cluster under that test would lose its jobs.
    timeout 10 scontrol ping >/dev/null 2>&1 || return 1
    for n in $(node_names "$count"); do
        [[ -n "$(timeout 10 sinfo -h -n "$n" -o '%T' 2>/dev/null)" ]] || return 1
    done
}

write_config() {  # write_config COUNT
    local count=$1 cpus mem
    # This machine's CPUs and memory, as slurmd itself sees them.
    cpus="$("$(sbin slurmd)" -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n1)"
    mem="$("$(sbin slurmd)" -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)"
    # At least 8 CPUs, whatever the machine has (config_overrides): tests' tiny jobs then never queue
    # behind each other on a 2-core box, and a 2-task DDP job fits beside another run.
    cpus="${MDTUI_SLURM_CPUS:-$((cpus > 8 ? cpus : 8))}"
    mkdir -p "$DIR/etc" "$DIR/state" "$DIR/log" "$DIR/run" "$DIR/munge" "$DIR/dev" "$DIR/tmp"
    local n
    # Slurm does not create the per-node (%n) spool folders itself
    for n in $(node_names "$count"); do mkdir -p "$DIR/spool-$n"; done
    chmod 700 "$DIR/munge"
    local i files=()
    for ((i = 0; i < GPUS; i++)); do
        [[ -e "$DIR/dev/nvidia$i" ]] || mknod "$DIR/dev/nvidia$i" c 1 3
        files+=("$DIR/dev/nvidia$i")
    done
    local ctld nodes_conf node
    if [[ "$count" == 2 ]]; then
        # slurmctld runs in this host's namespaces: it must be named as the host (else "This host
        # (...) not a valid controller"), at node1's address
        ctld="$(hostname -s)($NET.1)"
        nodes_conf="NodeName=node1 NodeAddr=$NET.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
NodeName=node2 NodeAddr=$NET.2 CPUs=$cpus RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=node1 Default=YES MaxTime=INFINITE State=UP
PartitionName=$MULTI_PARTITION Nodes=node1,node2 MaxTime=INFINITE State=UP"
        # node1 runs on this host, whose own name must resolve there as a real host's does (to its
        # address, not loopback): torchrun and gloo look it up
        printf '127.0.0.1 localhost\n%s.1 node1 %s\n%s.2 node2\n' "$NET" "$(hostname -s)" "$NET" >"$DIR/etc/hosts"
    else
        node="$(hostname -s)"
        ctld="$node(127.0.0.1)"
        nodes_conf="NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP"
    fi
    cat >"$CONF" <<CONF
# Generated by tests/slurm/cluster.sh for a $count-node test cluster on $(hostname -s); do not edit.
ClusterName=mdtui
MailProg=/bin/true
SlurmctldHost=$ctld
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
SlurmctldPort=${MDTUI_SLURM_PORT:-6817}
SlurmdPort=$(( ${MDTUI_SLURM_PORT:-6817} + 1 ))
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
TmpFS=$DIR/tmp
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=100000
GresTypes=gpu
JobRequeue=1
ReturnToService=1
MinJobAge=3600
KillWait=5
OverTimeLimit=0
InactiveLimit=0
Waittime=0
MessageTimeout=10
SlurmdTimeout=30
UnkillableStepTimeout=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
$nodes_conf
CONF
    local joined
    joined="$(IFS=,; echo "${files[*]}")"
    # Explicit device files, no autodetection: the files make Slurm hand out indices (CUDA_VISIBLE_DEVICES).
    # Two nodes share the same fake files: nothing opens them.
    printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s\n' "$(node_names "$count" | tr ' ' ',')" "$joined" \
        >"$DIR/etc/gres.conf"
    # proctrack/linuxproc and task/none use no cgroup, but slurmd 22.05 still loads a cgroup plugin (there
    # is no CgroupPlugin=disabled). On a cgroup v2 host without systemd (a container) that plugin would
    # ask systemd over dbus and fail: IgnoreSystemdOnFailure lets it carry on.
    printf 'CgroupPlugin=autodetect\nIgnoreSystemdOnFailure=yes\n' >"$DIR/etc/cgroup.conf"
}

start_munge() {
    [[ -f "$DIR/munge/munge.key" ]] || {
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none
        chmod 400 "$DIR/munge/munge.key"
    }
    "$(sbin munged)" --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged failed to start: see $DIR/log/munged.log"
}

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@"; do
        ((SECONDS - t0 < limit)) || return 1
        sleep 0.5
    done
}

node_usable() {  # node_usable NAME
    [[ "$(sinfo -h -n "$1" -o '%T' 2>/dev/null | head -n1)" =~ ^(idle|mixed|allocated)$ ]]
}

make_link() {
    # node2's network: its own namespace, joined to this one by a veth pair named $VETH at both ends
    ip netns add "$NETNS" || die "cannot create the network namespace $NETNS (ip netns add)"
    ip link add "$VETH" type veth peer name "${VETH}p" || die "cannot create the veth pair $VETH (ip link add)"
    ip link set "${VETH}p" netns "$NETNS"
    ip -n "$NETNS" link set "${VETH}p" name "$VETH"
    ip addr add "$NET.1/24" dev "$VETH"
    ip -n "$NETNS" addr add "$NET.2/24" dev "$VETH"
    ip link set "$VETH" up
    ip -n "$NETNS" link set "$VETH" up
    ip -n "$NETNS" link set lo up
}

start_slurmd() {  # start_slurmd NAME COUNT: in its own mount namespace, with its own /etc/hosts
    local name=$1 count=$2
    if [[ "$count" != 2 ]]; then
        "$(sbin slurmd)" -f "$CONF" -N "$name"
    elif [[ "$name" == node1 ]]; then
        unshare --mount --propagation private sh -c \
            "mount --bind '$DIR/etc/hosts' /etc/hosts && exec '$(sbin slurmd)' -f '$CONF' -N node1"
    else
        nsenter --net="/run/netns/$NETNS" unshare --uts --mount --propagation private sh -c \
            "mount --bind '$DIR/etc/hosts' /etc/hosts && hostname node2 && exec '$(sbin slurmd)' -f '$CONF' -N node2"
    fi
}

up() {  # up COUNT
    local count=$1 n
    need_tools
    # without --nodes (count 0) any running cluster will do (a 2-node one serves one-node tests: its
    # default partition is node1 alone); a fresh one has one node
    if healthy "${count#0}"; then
        log "already up ($DIR, $(running_nodes) node(s))"
        env_lines
        return 0
    fi
    down_quiet
    [[ "$count" != 0 ]] || count=1
    local t0=$SECONDS
    # A fresh controller every time: no job or node state from an earlier cluster.
    rm -rf "$DIR/state" "$DIR"/spool "$DIR"/spool-*
    write_config "$count"
    [[ "$count" != 2 ]] || make_link
    echo "$count" >"$DIR/run/nodes"
    start_munge
    wait_until 10 "munge socket" test -S "$DIR/munge/munge.socket" || die "munged did not start: see $DIR/log/munged.log"
    "$(sbin slurmctld)" -c -f "$CONF" || die "slurmctld failed to start: see $DIR/log/slurmctld.log"
    wait_until 20 "slurmctld" scontrol ping >/dev/null 2>&1 || die "slurmctld did not answer: see $DIR/log/slurmctld.log"
    for n in $(node_names "$count"); do
        start_slurmd "$n" "$count" || die "slurmd of $n failed to start: see $DIR/log/slurmd-$n.log"
    done
    for n in $(node_names "$count"); do
        wait_until 30 "node" node_usable "$n" \
            || die "node $n did not become idle: see $DIR/log/slurmd-$n.log and $DIR/log/slurmctld.log"
    done
    log "up in $((SECONDS - t0)) s ($DIR, $count node(s))"
    env_lines
}

env_lines() {
    echo "export SLURM_CONF=$CONF"
    if [[ "$(running_nodes)" == 2 ]]; then
        # gloo picks its interface by the host name otherwise, which on node1 is not in its hosts file
        echo "export GLOO_SOCKET_IFNAME=$VETH"
        echo "export MDTUI_SLURM_NODES='node1 node2'"
        echo "export MDTUI_SLURM_MULTI_PARTITION=$MULTI_PARTITION"
    else
        echo "export MDTUI_SLURM_NODES=$(hostname -s)"
    fi
}

stop_pidfile() {  # stop_pidfile FILE: TERM, then KILL after 10 s
    local f=$1 pid
    [[ -f "$f" ]] || return 0
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

our_stepds() {  # slurmstepd processes with a file open in our spool: the job steps of this cluster
    local p
    for p in /proc/[0-9]*; do
        [[ "$(cat "$p/comm" 2>/dev/null)" == slurmstepd ]] || continue
        if ls -l "$p/fd" 2>/dev/null | grep -q -- "$DIR/"; then echo "${p#/proc/}"; fi
    done
}

down_quiet() {
    if pid_alive "$DIR/run/slurmctld.pid"; then
        # Cancel every job so slurmd ends their steps itself; then the daemons.
        scancel --full --quiet --user=root >/dev/null 2>&1 || true
        local ids
        ids="$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')" || true
        [[ -z "${ids// /}" ]] || scancel --full --quiet $ids >/dev/null 2>&1 || true
        wait_until 15 "jobs to end" jobs_gone || log "some jobs did not end in 15 s; killing their steps"
    fi
    local f
    for f in "$DIR"/run/slurmd*.pid; do stop_pidfile "$f"; done
    stop_pidfile "$DIR/run/slurmctld.pid"
    local pid
    for pid in $(our_stepds); do kill -KILL "$pid" 2>/dev/null || true; done
    stop_pidfile "$DIR/run/munged.pid"
    # the second node's link and namespace (deleting one end of a veth pair deletes both)
    ! ip link show "$VETH" >/dev/null 2>&1 || ip link del "$VETH" || true
    [[ ! -e "/run/netns/$NETNS" ]] || ip netns del "$NETNS" || true
    rm -f "$DIR/run/nodes"
}

jobs_gone() { [[ -z "$(squeue -h -t running,completing,configuring -o '%i' 2>/dev/null)" ]]; }

down() {
    down_quiet
    log "down ($DIR kept for its logs)"
}

case "${1:-}" in
    up)
        nodes=0
        if [[ "${2:-}" == --nodes ]]; then nodes="${3:-}"; elif [[ "${2:-}" == --nodes=* ]]; then nodes="${2#--nodes=}"; fi
        [[ "$nodes" =~ ^[012]$ ]] || die "--nodes takes 1 or 2, not '$nodes'"
        up "$nodes"
        ;;
    down) down ;;
    status)
        if healthy; then echo "up ($DIR, $(running_nodes) node(s))"; sinfo 2>/dev/null; else echo "down ($DIR)"; exit 1; fi
        ;;
    env) env_lines ;;
    *) echo "usage: $0 up [--nodes 1|2]|down|status|env" >&2; exit 2 ;;
esac
