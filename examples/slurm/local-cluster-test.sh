#!/usr/bin/env bash
# Tests examples/slurm/score.sbatch on a real Slurm: starts a single-node cluster (munged,
# slurmctld, slurmd on 127.0.0.1, every file under $WORK/slurm, ports chosen at random), then
#   1. submits a 3-task array over $ENC and checks the merged logits equal $REFERENCE (one
#      `cryptodl score` process) byte for byte;
#   2. submits it again into a fresh directory, cancels task 2 while it scores, checks its
#      batch is missing and the others are there, resubmits the array, and checks it resumes
#      to the same bytes (and `cryptodl status` says complete).
# Every daemon it started is stopped on exit. tests/slurm.rs runs it in CI.
#
#   local-cluster-test.sh --check    exit 0 if it can run here, 77 (with the reason) if not
#   CRYPTODL=... MODEL=... KEYS=.../eval.keys ENC=... REFERENCE=... WORK=... local-cluster-test.sh
#
# Exit status: 0 passed, 1 failed, 2 usage, 77 cannot run here (not root, or Slurm / munge not
# installed: apt-get install slurmctld slurmd slurm-client munge).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "SKIP: a local Slurm cluster needs root (slurmd starts jobs as their user)"
    exit 77
fi
for c in munged mungekey slurmctld slurmd sbatch squeue scancel sinfo; do
    if ! command -v "$c" >/dev/null; then
        echo "SKIP: $c is not installed (apt-get install slurmctld slurmd slurm-client munge)"
        exit 77
    fi
done
[ "${1:-}" = --check ] && exit 0

for v in CRYPTODL MODEL KEYS ENC REFERENCE WORK; do
    [ -n "${!v:-}" ] || { echo "usage: set $v (see the header of $0)"; exit 2; }
done

T="$WORK/slurm"
mkdir -p "$T/state" "$T/spool" "$T/out"
chmod 700 "$T"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
fail() {
    echo "FAILED: $*"
    for f in "$T"/out/*.out "$T"/*.log "$T"/*.out; do
        [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }
    done
    exit 1
}
# Waits (up to $2 seconds) for the command $1 to succeed.
wait_for() {
    local deadline=$((SECONDS + $2))
    until eval "$1"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

# munge: a fresh key, a private socket.
mungekey -c -k "$T/munge.key"
chmod 600 "$T/munge.key"
munged -F -f --key-file="$T/munge.key" --socket="$T/munge.sock" --pid-file="$T/munged.pid" \
    --log-file="$T/munged.log" --seed-file="$T/munged.seed" >"$T/munged.out" 2>&1 &
pids+=($!)
wait_for "[ -S '$T/munge.sock' ]" 10 || fail "munged did not start"

host=$(hostname -s)
port=$((20000 + RANDOM % 20000))
export SLURM_CONF="$T/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=cryptodl-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$T/munge.sock
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -i >"$T/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -N "$host" >"$T/slurmd.out" 2>&1 &
pids+=($!)
wait_for "sinfo -h -o %T 2>/dev/null | grep -q idle" 60 || fail "the node did not come up"
echo "slurm: node $host idle (ports $port, $((port + 1)))"

submit() { # $1: output directory; prints the job id
    sbatch --parsable --array=1-3 --cpus-per-task=1 -o "$T/out/%A_%a.out" \
        --export="ALL,CRYPTODL=$CRYPTODL,MODEL=$MODEL,KEYS=$KEYS,ENC=$ENC,SCORED=$1,BACKEND=cpu,EXTRA=${EXTRA:-}" \
        "$here/score.sbatch"
}
finish() { # $1: job id
    wait_for "[ -z \"\$(squeue -h -j $1 2>/dev/null)\" ]" 600 || fail "job $1 did not finish"
}
same_as_reference() { # $1: output directory
    local n=0
    for f in "$REFERENCE"/logits-*.cts; do
        cmp -s "$f" "$1/$(basename "$f")" || fail "$1/$(basename "$f") differs from one process's"
        n=$((n + 1))
    done
    echo "  $n logits file(s) equal to one process's, byte for byte"
}

echo "1. a 3-task array scores the job"
job=$(submit "$WORK/array")
finish "$job"
grep -l '"scored"' "$T"/out/"${job}"_*.out | wc -l | grep -qx 3 || fail "not every task reported"
same_as_reference "$WORK/array"

echo "2. cancel task 2 mid-run, resubmit"
job=$(submit "$WORK/cancel")
wait_for "grep -qs '\"event\":\"start\".*\"shard\":\"2/3\"' '$WORK'/cancel/logs/*.jsonl" 300 ||
    fail "task 2 did not start"
scancel "${job}_2"
finish "$job"
[ ! -e "$WORK/cancel/logits-00001.cts" ] ||
    fail "task 2 finished its batch before the cancel landed: nothing to resume"
[ -e "$WORK/cancel/logits-00000.cts" ] && [ -e "$WORK/cancel/logits-00002.cts" ] ||
    fail "tasks 1 and 3 did not finish"
echo "  task 2 cancelled mid-batch; batches 0 and 2 done"
job=$(submit "$WORK/cancel")
finish "$job"
same_as_reference "$WORK/cancel"
"$CRYPTODL" status --in "$ENC" --out "$WORK/cancel" --json | grep -q '"complete": true' ||
    fail "status does not say complete"
echo "PASSED"
