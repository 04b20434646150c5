#!/usr/bin/env bash
# Runs auth-service and todo-service on this machine with the embedded SQLite
# store under ./data, waits until both report ready, and stops both on Ctrl-C.
# `make run` builds the binaries and grpcurl first and then calls this script.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/bin
grpcurl=$root/.bin/grpcurl
data=$root/data

auth_grpc=127.0.0.1:50051
auth_http=127.0.0.1:8081
todo_grpc=127.0.0.1:50052
todo_http=127.0.0.1:8082

pids=()
stop_all() {
	trap - INT TERM EXIT
	if [ ${#pids[@]} -gt 0 ]; then
		echo "stopping services (pids ${pids[*]})"
		kill -TERM "${pids[@]}" 2>/dev/null || true
		wait "${pids[@]}" 2>/dev/null || true
	fi
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

# wait_ready NAME ADDR PID polls the gRPC readiness health service for up to
# 60 seconds and fails early if the process exits.
wait_ready() {
	local name=$1 addr=$2 pid=$3
	for _ in $(seq 1 600); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "$name exited during start-up; see its log lines above" >&2
			return 1
		fi
		if "$grpcurl" -plaintext -max-time 1 -d '{"service":"readiness"}' "$addr" grpc.health.v1.Health/Check 2>/dev/null | grep -q '"SERVING"'; then
			return 0
		fi
		sleep 0.1
	done
	echo "$name did not become ready on $addr within 60 seconds" >&2
	return 1
}

mkdir -p "$data"

"$bin/auth-service" serve -dev \
	-grpc-addr "$auth_grpc" -http-addr "$auth_http" \
	-issuer "http://$auth_http" -data-dir "$data/auth" -log-format text &
pids+=($!)
wait_ready auth-service "$auth_grpc" "${pids[0]}"

"$bin/todo-service" serve \
	-grpc-addr "$todo_grpc" -http-addr "$todo_http" \
	-issuer "http://$auth_http" -jwks-url "http://$auth_http/.well-known/jwks.json" \
	-data-dir "$data/todo" -log-format text &
pids+=($!)
wait_ready todo-service "$todo_grpc" "${pids[1]}"

cat <<TEXT

Both services are ready. Data lives in $data.
  auth-service  gRPC $auth_grpc   JWKS http://$auth_http/.well-known/jwks.json
  todo-service  gRPC $todo_grpc   metrics http://$todo_http/metrics
Try: $grpcurl -plaintext $auth_grpc list
Press Ctrl-C to stop both.

TEXT

# Stop everything as soon as either service exits. A service that exits
# with status 0 was stopped by a signal, for example Ctrl-C in this
# terminal, which reaches both services at once: that is a normal stop.
status=0
wait -n "${pids[@]}" || status=$?
if [ "$status" -ne 0 ]; then
	echo "a service exited with status $status; stopping the other" >&2
fi
exit "$status"
