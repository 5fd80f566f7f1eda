# shellcheck shell=bash
# Helpers shared by the stacks' settings files (e2e/local/lib/common.sh, e2e/k8s/lib.sh), which
# source this file and set, before calling them:
#   LOG_TAG            the tag of say/die's lines;
#   PROC_STATE         where background processes keep NAME.pid and NAME.log;
#   PROC_STOP_GRACE_S  how long stop_proc waits after SIGTERM before SIGKILL.

say() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { # pid_alive NAME
  local f="$PROC_STATE/$1.pid"
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

start_bg() { # start_bg NAME CMD... ; runs in its own session, logs to $PROC_STATE/NAME.log
  local name=$1; shift
  mkdir -p "$PROC_STATE"
  setsid "$@" >"$PROC_STATE/$name.log" 2>&1 < /dev/null &
  echo $! > "$PROC_STATE/$name.pid"
}

wait_for() { # wait_for NAME SECONDS CHECK-CMD...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$name"; then
      say "$name exited while starting; last lines of $PROC_STATE/$name.log:"
      tail -n 30 "$PROC_STATE/$name.log" >&2 || true
      die "$name did not come up"
    fi
    if (( SECONDS > deadline )); then
      say "$name not healthy after ${secs}s; last lines of $PROC_STATE/$name.log:"
      tail -n 30 "$PROC_STATE/$name.log" >&2 || true
      die "$name did not come up"
    fi
    sleep 1
  done
}

stop_proc() { # stop_proc NAME: SIGTERM its process group, then SIGKILL after the grace period
  local f="$PROC_STATE/$1.pid" pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((PROC_STOP_GRACE_S * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
