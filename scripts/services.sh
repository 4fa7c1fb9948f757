#!/usr/bin/env bash
# Makes sure the services eventgen's tests use are up on this machine
# (loopback, the go-svc machine kind): PostgreSQL, MariaDB, Redis, RabbitMQ
# and NATS with JetStream. A service that is down is started with the
# machine's own start command and waited for; one that does not answer in
# time fails the script with the service's log file named. It then creates
# the databases the tests need and prints the EVENTGEN_TEST_* variables.
#
# Usage: scripts/services.sh            check, start, create databases
#        eval "$(scripts/services.sh --env)"   also export the variables
#
# Needs root to start a service; checking works as any user.
set -euo pipefail

WAIT_SECONDS=${WAIT_SECONDS:-120}

log() { printf '%s\n' "$*" >&2; }
die() { log "services: $*"; exit 1; }

# wait_for NAME LOGFILE CHECK...: run CHECK until it succeeds or time runs out.
wait_for() {
	local name=$1 logfile=$2
	shift 2
	local deadline=$((SECONDS + WAIT_SECONDS))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			die "$name did not answer within ${WAIT_SECONDS}s (check: $*; log: $logfile)"
		fi
		sleep 1
	done
}

# ensure NAME LOGFILE CHECK START: start NAME with START if CHECK fails, then
# wait for CHECK.
ensure() {
	local name=$1 logfile=$2 check=$3 start=$4
	if eval "$check" >/dev/null 2>&1; then
		log "services: $name is up"
		return
	fi
	[[ $(id -u) == 0 ]] || die "$name is down and starting it needs root"
	log "services: $name is down; starting: $start"
	eval "$start" >&2 || die "$name: start command failed: $start"
	wait_for "$name" "$logfile" bash -c "$check"
	log "services: $name is up"
}

pg_check='pg_isready -q -h 127.0.0.1 -p 5432'
mariadb_check='mariadb-admin -uroot -h127.0.0.1 -P3306 --connect-timeout=2 ping'
redis_check='[[ $(redis-cli -h 127.0.0.1 -p 6379 ping) == PONG ]]'
rabbit_check='(exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null'
nats_check='(exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null'

# nats_jetstream: the server's INFO line says whether JetStream is on.
nats_jetstream() {
	local info
	exec 3<>/dev/tcp/127.0.0.1/4222 || return 1
	IFS= read -r -t 5 info <&3 || { exec 3>&-; return 1; }
	exec 3>&-
	[[ $info == *'"jetstream":true'* ]]
}

ensure_all() {
	ensure PostgreSQL "/var/log/postgresql/postgresql-$(ls /etc/postgresql 2>/dev/null | head -n1)-main.log" \
		"$pg_check" \
		'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
	ensure MariaDB /var/log/mysql/error.log \
		"$mariadb_check" \
		'start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd'
	mkdir -p /var/log/redis 2>/dev/null || true
	ensure Redis /var/log/redis/ci.log \
		"$redis_check" \
		'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log'
	ensure RabbitMQ /var/log/rabbitmq \
		"$rabbit_check" \
		'rabbitmq-server -detached'
	ensure NATS /var/log/nats-server.log \
		"$nats_check" \
		'start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log'
	nats_jetstream || die "NATS on 127.0.0.1:4222 runs without JetStream; restart it with -js (see /var/log/nats-server.log)"
	log "services: NATS has JetStream"
}

create_databases() {
	if ! psql -U postgres -h 127.0.0.1 -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -qx 1; then
		psql -U postgres -h 127.0.0.1 -qc 'CREATE DATABASE test' || die "PostgreSQL: cannot create database test"
		log "services: PostgreSQL database test created"
	fi
	mariadb -uroot -h127.0.0.1 -P3306 -e 'CREATE DATABASE IF NOT EXISTS test' || die "MariaDB: cannot create database test"
	log "services: databases ready"
}

print_env() {
	cat <<'EOF'
export EVENTGEN_TEST_POSTGRES='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
export EVENTGEN_TEST_MYSQL='root@tcp(127.0.0.1:3306)/test'
export EVENTGEN_TEST_AMQP='amqp://guest:guest@127.0.0.1:5672/'
export EVENTGEN_TEST_NATS='nats://127.0.0.1:4222'
export EVENTGEN_TEST_REDIS='redis://127.0.0.1:6379/0'
export EVENTGEN_TEST_REQUIRE_SERVICES=1
EOF
}

ensure_all
create_databases
if [[ ${1:-} == --env ]]; then
	print_env
fi
