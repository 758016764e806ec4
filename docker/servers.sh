#!/usr/bin/env bash
# Local server mode without Docker: `make serve` / `make stop` / `make serve-status` call this.
#
#   docker/servers.sh start [serve options]   # Prefect server + MLflow server + the deployments' serve process
#   docker/servers.sh stop                    # stop them, by the process ids recorded at start
#   docker/servers.sh status
#
# Settings (environment): PREFECT_PORT (4200), MLFLOW_PORT (5000), HOST (127.0.0.1),
# BIN (the virtualenv's bin folder, default .venv/bin), WAIT_SECONDS (180), and
# PREFECT_UI_API_URL (the API address the Prefect UI's pages call; set it when the UI is opened
# from another machine, e.g. HOST=0.0.0.0 PREFECT_UI_API_URL=http://my-box:4200/api).
# Everything lives in workspace/: Prefect's database (workspace/prefect/), MLflow's SQLite store
# (workspace/mlflow.db) and artifacts (workspace/mlartifacts/), the stage store, the process ids
# (workspace/pids/) and the logs (workspace/logs/).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WS="$ROOT/workspace"
PIDS="$WS/pids"
LOGS="$WS/logs"
BIN="${BIN:-$ROOT/.venv/bin}"
HOST="${HOST:-127.0.0.1}"
PREFECT_PORT="${PREFECT_PORT:-4200}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
WAIT_SECONDS="${WAIT_SECONDS:-180}"
# Clients reach a server bound to all interfaces through the loopback address.
CLIENT_HOST="$HOST"; [ "$HOST" = "0.0.0.0" ] && CLIENT_HOST=127.0.0.1
PREFECT_URL="http://$CLIENT_HOST:$PREFECT_PORT"
MLFLOW_URL="http://$CLIENT_HOST:$MLFLOW_PORT"
NAMES=(serve mlflow prefect)  # stop order: the serve process first, then the servers

alive() {  # alive NAME: the recorded process still runs
    local file="$PIDS/$1.pid"
    [ -f "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null
}

healthy() {  # healthy URL: answers 2xx within 3 s
    "$BIN/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' "$1" 2>/dev/null
}

port_free() {  # port_free PORT: nothing listens on it
    "$BIN/python" -c '
import socket, sys
with socket.socket() as s:
    sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) != 0 else 1)' "$CLIENT_HOST" "$1"
}

deployments_registered() {  # >= 3 deployments (compare, nightly, prepare-dataset) unpaused and polled
    "$BIN/python" -c '
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=b"{}", headers={"Content-Type": "application/json"})
ready = [d for d in json.load(urllib.request.urlopen(request, timeout=3)) if not d["paused"] and d["status"] == "READY"]
sys.exit(0 if len(ready) >= 3 else 1)' "$PREFECT_URL/api/deployments/filter" 2>/dev/null
}

fail() { echo "$1" >&2; echo "start-up failed: stopping what was started" >&2; stop; exit 1; }

launch() {  # launch NAME COMMAND...: in its own process group (so stop ends its children too)
    local name="$1"; shift
    setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$PIDS/$name.pid"
}

wait_for() {  # wait_for NAME URL
    local name="$1" url="$2" waited=0
    until healthy "$url"; do
        if ! alive "$name"; then
            tail -n 20 "$LOGS/$name.log" >&2
            fail "$name exited during start-up (above: the end of workspace/logs/$name.log)"
        fi
        [ "$waited" -lt "$WAIT_SECONDS" ] || fail "$name did not answer $url within $WAIT_SECONDS s (see workspace/logs/$name.log)"
        sleep 1; waited=$((waited + 1))
    done
}

start() {
    mkdir -p "$PIDS" "$LOGS"
    for name in "${NAMES[@]}"; do
        if alive "$name"; then
            echo "$name is already running (pid $(cat "$PIDS/$name.pid")); run 'make stop' first" >&2
            exit 1
        fi
    done
    for port in "$PREFECT_PORT" "$MLFLOW_PORT"; do
        port_free "$port" || { echo "port $port on $CLIENT_HOST is in use; choose another (make serve PREFECT_PORT=... MLFLOW_PORT=...)" >&2; exit 1; }
    done

    export PREFECT_HOME="$WS/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false
    # The UI finds its API through these settings, not through --port: without them a UI on
    # another port than 4200 shows "Can't connect to Server API".
    PREFECT_SERVER_API_HOST="$HOST" PREFECT_SERVER_API_PORT="$PREFECT_PORT" \
    PREFECT_UI_API_URL="${PREFECT_UI_API_URL:-$PREFECT_URL/api}" \
        launch prefect "$BIN/prefect" server start --host "$HOST" --port "$PREFECT_PORT"
    # MLflow's job runner (GenAI jobs) costs ~2 GB in seven processes and is not needed here.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false launch mlflow "$BIN/mlflow" server \
        --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
        --backend-store-uri "sqlite:///$WS/mlflow.db" --artifacts-destination "$WS/mlartifacts"
    echo "waiting for the Prefect server ($PREFECT_URL) and the MLflow server ($MLFLOW_URL) ..."
    wait_for prefect "$PREFECT_URL/api/health"
    wait_for mlflow "$MLFLOW_URL/health"

    # The serve process runs from the project folder: the configs' ./workspace is this workspace.
    cd "$ROOT"
    PREFECT_API_URL="$PREFECT_URL/api" MLFLOW_TRACKING_URI="$MLFLOW_URL" \
        launch serve "$BIN/python" -m ausynth.flows.serve "$@"
    echo "registering the deployments ..."
    local waited=0
    until deployments_registered; do
        alive serve || { tail -n 20 "$LOGS/serve.log" >&2; fail "the serve process exited (above: workspace/logs/serve.log)"; }
        [ "$waited" -lt "$WAIT_SECONDS" ] || fail "the deployments were not registered within $WAIT_SECONDS s"
        sleep 1; waited=$((waited + 1))
    done
    cat <<EOF
Prefect UI:  $PREFECT_URL   (Deployments: ausynth-compare/compare, ausynth-compare/nightly-toy-quick, ...)
MLflow UI:   $MLFLOW_URL
Trigger a comparison from the shell:
  PREFECT_API_URL=$PREFECT_URL/api $BIN/prefect deployment run ausynth-compare/compare --param config=toy-quick
Logs in workspace/logs/, process ids in workspace/pids/. Stop everything with: make stop
EOF
}

stop() {
    local name pid waited
    for name in "${NAMES[@]}"; do
        [ -f "$PIDS/$name.pid" ] || continue
        pid="$(cat "$PIDS/$name.pid")"
        if kill -0 "$pid" 2>/dev/null; then
            echo "stopping $name (process group $pid)"
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            waited=0
            while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 30 ]; do sleep 0.5; waited=$((waited + 1)); done
            if kill -0 "$pid" 2>/dev/null; then
                echo "$name did not stop within 15 s: killing it" >&2
                kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$PIDS/$name.pid"
    done
}

status() {
    for name in prefect mlflow serve; do
        if alive "$name"; then echo "$name: running (pid $(cat "$PIDS/$name.pid"))"; else echo "$name: stopped"; fi
    done
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start [serve options] | stop | status" >&2; exit 2 ;;
esac
