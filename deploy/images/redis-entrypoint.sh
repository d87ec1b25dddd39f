#!/bin/bash
set -euo pipefail
if [ "$1" = redis-server ]; then
  shift
  chown redis:redis /data
  # No config file: listen on every interface of the container, as the official image does.
  exec runuser -u redis -- redis-server --protected-mode no --dir /data "$@"
fi
exec "$@"
