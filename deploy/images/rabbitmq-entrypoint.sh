#!/bin/bash
set -euo pipefail
if [ "$1" = rabbitmq-server ]; then
  {
    echo "listeners.tcp.default = 5672"
    echo "loopback_users = none"
    echo "default_user = ${RABBITMQ_DEFAULT_USER:-guest}"
    echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}"
  } > /etc/rabbitmq/rabbitmq.conf
  mkdir -p /var/log/rabbitmq
  chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
  # Logs to stdout; Debian's rabbitmq-env.conf keeps the node name and Erlang
  # distribution on the container's loopback (rabbit@localhost).
  shift
  exec runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq RABBITMQ_LOGS=- \
    /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi
exec "$@"
