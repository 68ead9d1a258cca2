#!/usr/bin/env bash
# A private single-node SLURM cluster (munged, MariaDB, slurmdbd, slurmctld, slurmd) for kdgat's tests and demo.
#
#   scripts/slurm_cluster.sh start [STATE_DIR]    start (or reuse) the cluster; prints `export SLURM_CONF=...`
#   scripts/slurm_cluster.sh stop [STATE_DIR]     cancel its jobs, then stop only the daemons this script started
#   scripts/slurm_cluster.sh status [STATE_DIR]   exit 0 when every recorded daemon is alive and the node answers
#   scripts/slurm_cluster.sh env [STATE_DIR]      print `export SLURM_CONF=...`
#
# STATE_DIR defaults to $KDGAT_SLURM_DIR or /tmp/kdgat-slurm. Everything (configs, sockets, spool, logs, the MariaDB
# datadir, pid files) lives there; `$STATE_DIR/pids` records "name pid" for every daemon started, and `stop` kills
# exactly those pids (checked against /proc/<pid>/comm so a recycled pid is left alone). Runs as root without systemd.
# Facts and pitfalls behind each choice: ../shared/notes/local-slurm.md.
set -euo pipefail

# Daemons inherit the caller's open descriptors (a pytest pipe or a held lock file would never close): drop them.
for fd_path in /proc/$$/fd/*; do
  fd=${fd_path##*/}
  case "$fd" in 0|1|2|255) ;; *) eval "exec ${fd}>&-" 2>/dev/null || true ;; esac
done

ACTION=${1:-status}
STATE=${2:-${KDGAT_SLURM_DIR:-/tmp/kdgat-slurm}}
CTLD_PORT=${KDGAT_SLURM_PORT:-16817}
SLURMD_PORT=$((CTLD_PORT + 1))
DBD_PORT=$((CTLD_PORT + 2))
DB_PORT=${KDGAT_SLURM_DB_PORT:-13306}
ACCOUNTING=${KDGAT_SLURM_ACCOUNTING:-1}   # 0: no slurmdbd/MariaDB (sacct unavailable, start in ~0.3 s)
HOST=$(hostname -s)
CONF=$STATE/etc/slurm.conf
PIDS=$STATE/pids

log() { echo "slurm_cluster: $*" >&2; }
die() { log "$*"; exit 1; }

# "name pid" lines; a daemon is alive when its pid exists and still runs the recorded program.
alive() {  # alive NAME PID (a zombie waiting for its reaper counts as gone)
  local stat
  stat=$(cat "/proc/$2/stat" 2>/dev/null) || return 1
  [[ $stat == "$2 ($1"* ]] && [[ ${stat#*) } != Z* ]]
}

all_alive() {
  [[ -s $PIDS ]] || return 1
  local name pid
  while read -r name pid; do alive "$name" "$pid" || return 1; done < "$PIDS"
}

record() {  # record NAME PIDFILE [SECONDS]: wait for the daemon's pid file and add it to $PIDS
  local name=$1 pidfile=$2 tries=$(( ${3:-20} * 10 )) pid=""
  for ((i = 0; i < tries; i++)); do
    if [[ -s $pidfile ]]; then pid=$(tr -dc '0-9' < "$pidfile"); alive "$name" "$pid" && break; fi
    sleep 0.1
  done
  alive "$name" "$pid" || die "$name did not start; see $STATE/log/$name.log"
  echo "$name $pid" >> "$PIDS"
}

print_env() { echo "export SLURM_CONF=$CONF"; }

write_configs() {
  mkdir -p "$STATE"/{etc,log,run,spool/ctld,spool/d,munge}
  chmod 755 "$STATE" "$STATE/run"          # munge clients need o+x on every directory above the socket
  chmod 700 "$STATE/munge"
  local node cpus
  node=$(slurmd -C | head -n1)
  node=${node/NodeName=$HOST /}
  # Declare at least 4 CPUs (config_overrides) so an array of seeds runs side by side on a 2-core box.
  cpus=$(nproc); (( cpus < 4 )) && cpus=4
  node=$(sed -E "s/CPUs=[0-9]+/CPUs=$cpus/; s/CoresPerSocket=[0-9]+/CoresPerSocket=$cpus/; s/ UpTime=.*//" <<< "$node")
  local accounting=""
  if [[ $ACCOUNTING == 1 ]]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$STATE/run/munge.socket
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill"
  fi
  cat > "$CONF" <<EOF
# written by kdgat scripts/slurm_cluster.sh
ClusterName=kdgat
SlurmUser=root
SlurmdUser=root
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$STATE/run/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
GresTypes=gpu
KillWait=30   # SLURM's default: a run closing after SIGTERM retries its last write for up to 20 s
MinJobAge=300
DefMemPerCPU=256
MailProg=/bin/true
ReturnToService=2
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$accounting
NodeName=$HOST NodeAddr=127.0.0.1 $node Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
EOF
  # Fake GPUs: without File= the node goes INVAL.
  echo "NodeName=$HOST Name=gpu File=/dev/null,/dev/zero" > "$STATE/etc/gres.conf"
  cat > "$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$STATE/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=kdgat-local
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$STATE/etc/slurmdbd.conf"    # slurmdbd refuses a readable config
}

start_munge() {
  [[ -s $STATE/munge/munge.key ]] || { mungekey --create --keyfile="$STATE/munge/munge.key" >/dev/null; chmod 400 "$STATE/munge/munge.key"; }
  rm -f "$STATE/run/munge.socket" "$STATE/run/munged.pid"
  munged --socket="$STATE/run/munge.socket" --key-file="$STATE/munge/munge.key" --pid-file="$STATE/run/munged.pid" \
    --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munge.seed" </dev/null >>"$STATE/log/munged.log" 2>&1
  record munged "$STATE/run/munged.pid"
}

start_mariadb() {
  local data=$STATE/mariadb
  if [[ ! -d $data/mysql ]]; then
    mariadb-install-db --no-defaults --user=root --datadir="$data" --auth-root-authentication-method=normal \
      --skip-test-db </dev/null >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
  fi
  cat > "$STATE/etc/init.sql" <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'kdgat-local';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'kdgat-local';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
  rm -f "$STATE/run/mariadbd.pid"
  setsid mariadbd --no-defaults --user=root --datadir="$data" --socket="$STATE/run/mariadb.sock" --port="$DB_PORT" \
    --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$STATE/run/mariadbd.pid" \
    --init-file="$STATE/etc/init.sql" --innodb-buffer-pool-size=32M --log-error="$STATE/log/mariadbd.log" \
    </dev/null >>"$STATE/log/mariadbd.log" 2>&1 &
  record mariadbd "$STATE/run/mariadbd.pid" 60
  for ((i = 0; i < 300; i++)); do
    mariadb --no-defaults --socket="$STATE/run/mariadb.sock" -uroot -e "SELECT 1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "MariaDB does not answer; see $STATE/log/mariadbd.log"
}

start_slurm() {
  export SLURM_CONF=$CONF
  if [[ $ACCOUNTING == 1 ]]; then
    rm -f "$STATE/run/slurmdbd.pid"
    slurmdbd </dev/null >>"$STATE/log/slurmdbd.log" 2>&1   # reads slurmdbd.conf next to $SLURM_CONF
    record slurmdbd "$STATE/run/slurmdbd.pid"
    for ((i = 0; i < 100; i++)); do
      (exec 3<>"/dev/tcp/127.0.0.1/$DBD_PORT") 2>/dev/null && break
      sleep 0.1
    done
  fi
  rm -f "$STATE/run/slurmctld.pid" "$STATE/run/slurmd.pid"
  slurmctld -f "$CONF" </dev/null >>"$STATE/log/slurmctld.log" 2>&1
  record slurmctld "$STATE/run/slurmctld.pid"
  slurmd -f "$CONF" -N "$HOST" </dev/null >>"$STATE/log/slurmd.log" 2>&1
  record slurmd "$STATE/run/slurmd.pid"
  local state=""
  for ((i = 0; i < 300; i++)); do
    state=$(sinfo -h -o %T 2>/dev/null | head -n1 || true)
    [[ $state == idle* || $state == mixed* || $state == allocated* ]] && return 0
    sleep 0.1
  done
  die "the node did not become idle (state '$state'); see $STATE/log/slurmd.log and slurmctld.log"
}

stop_pids() {
  [[ -s $PIDS ]] || return 0
  local lines name pid
  mapfile -t lines < <(tac "$PIDS")   # reverse start order: slurmd first, munged last
  for line in "${lines[@]}"; do
    read -r name pid <<< "$line"
    alive "$name" "$pid" || continue
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$name" "$pid" || break; sleep 0.1; done
    if alive "$name" "$pid"; then log "$name ($pid) ignored SIGTERM; sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  done
  rm -f "$PIDS"
}

case "$ACTION" in
  start)
    for tool in munged mungekey slurmctld slurmd sinfo; do
      command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install slurmctld slurmd slurm-client munge)"
    done
    if [[ $ACCOUNTING == 1 ]]; then
      for tool in slurmdbd mariadbd mariadb-install-db mariadb; do
        command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install slurmdbd mariadb-server-core mariadb-client-core)"
      done
    fi
    if all_alive && SLURM_CONF=$CONF sinfo -h >/dev/null 2>&1; then
      log "already running under $STATE"; print_env; exit 0
    fi
    stop_pids     # a half-started cluster from an earlier attempt: stop what it recorded
    mkdir -p "$STATE"; : > "$PIDS"
    t0=$(date +%s%N)
    write_configs
    start_munge
    [[ $ACCOUNTING == 1 ]] && start_mariadb
    start_slurm
    log "up in $(( ($(date +%s%N) - t0) / 1000000 )) ms under $STATE (node $HOST)"
    print_env
    ;;
  stop)
    if [[ -s $PIDS ]] && [[ -f $CONF ]]; then
      # Jobs first: with slurmd gone their slurmstepd would ignore SIGTERM and linger.
      export SLURM_CONF=$CONF
      jobs=$(squeue -h -o %i 2>/dev/null || true)
      if [[ -n $jobs ]]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
          [[ -z $(squeue -h -t running,completing -o %i 2>/dev/null) ]] && break
          sleep 0.1
        done
      fi
    fi
    stop_pids
    log "stopped (state kept in $STATE)"
    ;;
  status)
    if all_alive && SLURM_CONF=$CONF sinfo -h >/dev/null 2>&1; then
      SLURM_CONF=$CONF sinfo -h -o '%P %T %c %m %G'
      exit 0
    fi
    exit 1
    ;;
  env)
    print_env
    ;;
  *)
    die "usage: $0 start|stop|status|env [STATE_DIR]"
    ;;
esac
