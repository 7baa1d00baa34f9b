# Sourced by the test-server scripts (cassandra.sh, minio.sh, coturn.sh).

# terminate PID SECONDS: SIGTERM, so the server can finish cleanly, then
# wait up to SECONDS for it to go and SIGKILL it if it has not. The caller
# defines log.
terminate() {
	local pid=$1 secs=$2
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq $((secs * 10))); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "pid $pid ignored SIGTERM for ${secs}s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
	sleep 0.5
}
