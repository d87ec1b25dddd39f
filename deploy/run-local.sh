#!/usr/bin/env bash
# make run-local: the services-mode stack on this machine, without Docker.
# Migrates the database, starts WORKERS_NUM web workers (messenger-api) and
# the search consumer (messenger-run-task-consumer) against local PostgreSQL,
# Redis and RabbitMQ, and with MESSAGE_STORAGE_TYPE=rabbitmq the synchronizer
# (messenger-run-synchronizer); stops them together (Ctrl-C, or when one exits).
# Every setting can be overridden from the environment: PORT=8090 make run-local
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/messenger}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
export RMQ_URL=${RMQ_URL:-amqp://guest:guest@127.0.0.1:5672}
# Own key prefix and queue, so a shared Redis/RabbitMQ is not mixed with other users'.
export REDIS_PREFIX=${REDIS_PREFIX:-messenger:local:}
export SEARCH_QUEUE=${SEARCH_QUEUE:-messenger.local.search}
export SYNC_QUEUE=${SYNC_QUEUE:-messenger.local.sync}
export WORKERS_NUM=${WORKERS_NUM:-2}
export PORT=${PORT:-8080}
export HOST=${HOST:-127.0.0.1}

say() { printf 'run-local: %s\n' "$*" >&2; }

hostport() { # host and port of a URL, default port $2
  local rest=${1#*://}; rest=${rest#*@}; rest=${rest%%/*}
  local host=${rest%%:*} port=${rest##*:}
  [ "$port" = "$rest" ] && port=$2
  echo "$host $port"
}
reachable() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}
for svc in "PostgreSQL $DATABASE_URL 5432" "Redis $REDIS_URL 6379" "RabbitMQ $RMQ_URL 5672"; do
  set -- $svc
  read -r h p < <(hostport "$2" "$3")
  if ! reachable "$h" "$p"; then
    say "$1 is not reachable at $h:$p; start it or set its URL (see README, Running against real services)"
    exit 1
  fi
done

say "building"
npm run -s build

db=${DATABASE_URL##*/}; db=${db%%\?*}
admin=${DATABASE_URL%/*}/postgres
if command -v psql >/dev/null; then
  if [ -z "$(psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
    say "creating database $db"
    psql "$admin" -qc "CREATE DATABASE \"$db\""
  fi
else
  say "psql not found: database $db must exist already"
fi
say "migrating $db"
node dist/messenger/db-cli.js migrate

pids=()
stop() {
  trap - INT TERM
  say "stopping"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM

say "starting $WORKERS_NUM web worker(s) on http://$HOST:$PORT"
node dist/messenger/main.js &
pids+=($!)
if [ -f dist/messenger/consumer.js ]; then
  say "starting the search consumer"
  node dist/messenger/consumer.js &
  pids+=($!)
else
  say "no search consumer in this build (dist/messenger/consumer.js missing): search tasks stay queued"
fi

if [ "${MESSAGE_STORAGE_TYPE:-db_direct}" = rabbitmq ]; then
  say "starting the synchronizer (MESSAGE_STORAGE_TYPE=rabbitmq)"
  # Its /health and /metrics on METRICS_PORT, beside the search consumer's.
  METRICS_PORT=${SYNC_METRICS_PORT:-9465} node dist/messenger/synchronizer.js &
  pids+=($!)
fi

# When one process ends, stop the others: they run and stop together.
set +e
wait -n "${pids[@]}"
status=$?
stop
exit "$status"
