#!/usr/bin/env bash
# make test-image: builds the production image with the real Dockerfile and
# runs the real docker-compose.yml (PostgreSQL, Redis, RabbitMQ, migrate, web1,
# web2, consumer, nginx; not the write-behind profile's synchronizer) with
# podman, then walks the API through nginx with curl (register, login, chat,
# join, post, page, search to SUCCESS through the consumer, logout), then
# removes every container, network and volume it made.
#
# No registry is needed: the base images are local stand-ins
# (deploy/images/build.sh, cached between runs) and deploy/compose.podman.yml
# names them. docker-compose (v1) drives podman's Docker-compatible API on a
# socket of this run's own; podman runs without systemd here, so this script
# runs the containers' compose healthchecks itself (podman healthcheck run),
# which is what depends_on's service_healthy waits for.
#
# Settings: IMAGETEST_PORT (nginx on 127.0.0.1, default 18480),
# IMAGETEST_PROJECT (default messenger-imagetest), MESSENGER_ENV_FILE
# (default deploy/.env.prod), IMAGETEST_DEADLINE (seconds for the whole run
# before teardown, default 1080), IMAGETEST_KEEP=1 leaves the stack running
# (and its podman API service and healthcheck loop) until
# `deploy/test-image.sh down`.
# Ends with "image: N passed, M failed"; exits non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$SECONDS
PROJECT=${IMAGETEST_PROJECT:-messenger-imagetest}
PORT=${IMAGETEST_PORT:-18480}
IMAGE=localhost/messenger-api:imagetest
export CONTAINERS_CONF=$ROOT/deploy/images/containers.conf
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
PASSED=0
FAILED=0
DEADLINE=${IMAGETEST_DEADLINE:-1080}
PIDFILE=/tmp/$PROJECT.pids
# The seconds a step may take: $1, or what is left of the deadline.
limit() { local left=$((DEADLINE - (SECONDS - T0))); [ "$left" -lt 1 ] && left=1; [ "$1" -lt "$left" ] && echo "$1" || echo "$left"; }

remove_project() { # every container, volume and network with the project's label
  local kind ids
  ids=$("${PODMAN[@]}" ps -aq --filter "label=com.docker.compose.project=$PROJECT")
  # (podman says it cannot remove healthcheck timers from systemd: there is none)
  [ -n "$ids" ] && "${PODMAN[@]}" rm -f -t 5 $ids >/dev/null 2>&1
  for kind in volume network; do
    ids=$("${PODMAN[@]}" $kind ls -q --filter "label=com.docker.compose.project=$PROJECT")
    [ -n "$ids" ] && "${PODMAN[@]}" $kind rm -f $ids >/dev/null 2>&1
  done
}

if [ "${1:-}" = down ]; then
  # After IMAGETEST_KEEP=1: stop the healthcheck loop and the API service, remove the stack.
  if [ -f "$PIDFILE" ]; then
    { read -r pids; read -r dir; } < "$PIDFILE"
    for p in $pids; do kill "$p" 2>/dev/null; done
    case ${dir:-} in /tmp/"$PROJECT".*) rm -rf "$dir" ;; esac
    rm -f "$PIDFILE"
  fi
  remove_project
  echo "removed the $PROJECT stack"
  exit 0
fi

phase() { printf '\n== %s  (%d s)\n' "$*" "$((SECONDS - T0))"; }
ok() { PASSED=$((PASSED + 1)); printf '  ok    %s\n' "$*"; }
bad() { FAILED=$((FAILED + 1)); printf '  FAIL  %s\n' "$*"; }
finish() {
  printf '\ntotal %d s\nimage: %d passed, %d failed\n' "$((SECONDS - T0))" "$PASSED" "$FAILED"
  [ "$FAILED" -eq 0 ]
  exit $?
}

WORK=$(mktemp -d /tmp/$PROJECT.XXXXXX)
trap 'rm -rf "$WORK"; finish' EXIT

phase "tools"
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v docker-compose >/dev/null || need+=(docker-compose)
[ -x /usr/libexec/podman/catatonit ] || need+=(catatonit)
command -v netavark >/dev/null || [ -x /usr/lib/podman/netavark ] || need+=(netavark aardvark-dns)
# netavark sets up container networks through iptables; without it compose up fails with
# "netavark: No such file or directory (os error 2)".
command -v iptables >/dev/null || need+=(iptables)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]} (Debian)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }; then
    bad "install ${need[*]}"
    finish
  fi
fi
ok "$(podman --version), $(runc --version | head -1), $(docker-compose version --short 2>/dev/null | head -1 | sed 's/^/docker-compose /')"

phase "base images (deploy/images/build.sh)"
if timeout "$(limit 900)" deploy/images/build.sh; then ok "base images"; else bad "base images"; finish; fi

phase "the image: podman build with the real Dockerfile"
# NODE_IMAGE names the base, as a registry-less build must; nothing else changes.
old_id=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null)
if timeout "$(limit 900)" "${PODMAN[@]}" build --format docker --network host \
     --build-arg NODE_IMAGE=localhost/messenger-local/node:latest -t "$IMAGE" . > "$WORK/build.log" 2>&1; then
  ok "built $IMAGE"
  # The image an earlier run built, now untagged (the build cache stays).
  new_id=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null)
  [ -n "$old_id" ] && [ "$old_id" != "$new_id" ] && "${PODMAN[@]}" rmi "$old_id" >/dev/null 2>&1
else
  tail -30 "$WORK/build.log"
  bad "podman build (log above)"
  finish
fi

SOCK=$WORK/podman.sock
export DOCKER_HOST=unix://$SOCK
export MESSENGER_IMAGE=$IMAGE HTTP_BIND=127.0.0.1 HTTP_PORT=$PORT
export MESSENGER_ENV_FILE=${MESSENGER_ENV_FILE:-deploy/.env.prod}
export COMPOSE_HTTP_TIMEOUT=300
COMPOSE=(docker-compose --no-ansi -p "$PROJECT" -f docker-compose.yml -f deploy/compose.podman.yml)
SERVICE_PID=
PUMP_PID=

project_ids() { "${PODMAN[@]}" "$1" ls -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null; }
teardown() {
  trap - EXIT INT TERM
  if [ "${IMAGETEST_KEEP:-0}" = 1 ]; then
    printf '%s %s\n%s\n' "$PUMP_PID" "$SERVICE_PID" "$WORK" > "$PIDFILE"
    echo "IMAGETEST_KEEP=1: the stack keeps running on http://127.0.0.1:$PORT"
    echo "  DOCKER_HOST=$DOCKER_HOST ${COMPOSE[*]} ps"
    echo "  stop it with: deploy/test-image.sh down"
    return
  fi
  phase "tear down"
  [ -n "$PUMP_PID" ] && kill "$PUMP_PID" 2>/dev/null && wait "$PUMP_PID" 2>/dev/null
  timeout 120 "${COMPOSE[@]}" --profile write-behind down -v --remove-orphans -t 20 >"$WORK/down.log" 2>&1 \
    || { tail -20 "$WORK/down.log"; echo "compose down failed: removing by label"; }
  # Whatever compose left behind, by the project's label.
  remove_project
  [ -n "$SERVICE_PID" ] && kill "$SERVICE_PID" 2>/dev/null && wait "$SERVICE_PID" 2>/dev/null
  local left
  left=$("${PODMAN[@]}" ps -aq --filter "label=com.docker.compose.project=$PROJECT" | wc -l)
  left=$((left + $("${PODMAN[@]}" volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | wc -l)))
  left=$((left + $("${PODMAN[@]}" network ls -q --filter "label=com.docker.compose.project=$PROJECT" | wc -l)))
  if [ "$left" -eq 0 ]; then ok "no container, volume or network of $PROJECT left"; else bad "$left objects of $PROJECT left"; fi
  rm -rf "$WORK"
}
trap 'teardown; finish' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

phase "podman API service and compose healthchecks"
# A leftover stack of an earlier, killed run goes first.
if [ -f "$PIDFILE" ] || [ -n "$("${PODMAN[@]}" ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ]; then
  echo "removing a leftover $PROJECT stack"
  "$0" down >/dev/null
fi
# podman 4.3's netavark can keep the address of a removed container in its IPAM
# database (seen here after a stack was torn down), and the next compose up then
# fails with "requested ip address 172.28.0.10 is already allocated". With no
# container at all on the machine nothing in that database is live, so it goes.
IPAM_DB=/run/containers/networks/ipam.db
if [ -f "$IPAM_DB" ] && [ -z "$("${PODMAN[@]}" ps -aq 2>/dev/null)" ]; then rm -f "$IPAM_DB"; fi
"${PODMAN[@]}" system service --time=0 "unix://$SOCK" >"$WORK/service.log" 2>&1 &
SERVICE_PID=$!
for _ in $(seq 1 50); do [ -S "$SOCK" ] && break; sleep 0.2; done
if [ -S "$SOCK" ]; then ok "podman system service on $SOCK"; else bad "podman system service did not start"; cat "$WORK/service.log"; exit 1; fi
# Runs each running container's healthcheck at its own interval, as an engine
# with systemd timers would (podman healthcheck run records the result).
(
  declare -A due=()
  while :; do
    now=$(date +%s)
    for c in $("${PODMAN[@]}" ps -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null); do
      if [ -z "${due[$c]:-}" ]; then
        ns=$("${PODMAN[@]}" inspect --format '{{if .Config.Healthcheck}}{{.Config.Healthcheck.Interval}}{{end}}' "$c" 2>/dev/null)
        [[ "$ns" =~ ^[0-9]+$ ]] || ns=10000000000
        due[$c]=$now
        due[i$c]=$(( ns / 1000000000 ))
      fi
      if [ "$now" -ge "${due[$c]}" ]; then
        due[$c]=$(( now + ${due[i$c]} ))
        timeout 15 "${PODMAN[@]}" healthcheck run "$c" >/dev/null 2>&1 &
      fi
    done
    sleep 1
  done
) &
PUMP_PID=$!

phase "compose config"
if "${COMPOSE[@]}" config -q; then ok "docker-compose.yml + deploy/compose.podman.yml"; else bad "compose config"; exit 1; fi

phase "compose up (nginx on 127.0.0.1:$PORT)"
if timeout "$(limit 420)" "${COMPOSE[@]}" up -d --no-build >"$WORK/up.log" 2>&1; then
  cat "$WORK/up.log"
  ok "compose up: every depends_on condition met"
else
  cat "$WORK/up.log"
  bad "compose up"
  "${PODMAN[@]}" ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}} {{.Status}}'
  for c in $("${PODMAN[@]}" ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter health=unhealthy); do
    echo "--- health log of $c"; "${PODMAN[@]}" inspect --format '{{json .State.Health}}' "$c" | cut -c1-1500
  done
  for s in postgres redis rabbitmq migrate web1 web2 consumer nginx; do
    echo "--- $s"; timeout 20 "${COMPOSE[@]}" logs --no-color --tail=15 "$s" 2>&1 | tail -15
  done
  exit 1
fi

cid() { "${PODMAN[@]}" ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=$1" | head -1; }
state() { "${PODMAN[@]}" inspect --format '{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$1" 2>/dev/null; }
for s in postgres redis rabbitmq web1 web2 nginx; do
  # Nothing waits for nginx's health, so its first check may still be due.
  for _ in $(seq 1 30); do st=$(state "$(cid $s)"); [ "$st" = "running 0 starting" ] || break; sleep 1; done
  case $st in "running 0 healthy") ok "$s running, healthy" ;; *) bad "$s: $st" ;; esac
done
st=$(state "$(cid consumer)")
case $st in "running 0"*) ok "consumer running" ;; *) bad "consumer: $st" ;; esac
st=$(state "$(cid migrate)")
case $st in "exited 0"*) ok "migrate ran and exited 0" ;; *) bad "migrate: $st" ;; esac
if [ -z "$(cid synchronizer)" ]; then ok "synchronizer not started (profile write-behind)"; else bad "synchronizer started without its profile"; fi
pub=$("${PODMAN[@]}" port "$(cid nginx)" 2>/dev/null | tr '\n' ' ')
case $pub in "80/tcp -> 127.0.0.1:$PORT ") ok "nginx published on 127.0.0.1:$PORT only" ;; *) bad "nginx published as: $pub" ;; esac
ip=$("${PODMAN[@]}" inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(cid nginx)")
if [ "$ip" = 172.28.0.10 ]; then ok "nginx at its fixed address 172.28.0.10 (TRUSTED_PROXIES)"; else bad "nginx at $ip, not 172.28.0.10"; fi

phase "walkthrough through nginx"
B=http://127.0.0.1:$PORT
BODY=
# fetch METHOD PATH [JSON] [HEADER]: sets CODE and BODY
fetch() {
  local method=$1 path=$2 data=${3:-} hdr=${4:-}
  local args=(-s -o "$WORK/body" -w '%{http_code}' --max-time 15 -X "$method")
  [ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data "$data")
  [ -n "$hdr" ] && args+=(-H "$hdr")
  CODE=$(curl "${args[@]}" "$B$path")
  BODY=$(cat "$WORK/body" 2>/dev/null)
}
# call NAME EXPECTED_STATUS METHOD PATH [JSON] [HEADER]
call() {
  local name=$1 want=$2; shift 2
  fetch "$@"
  if [ "$CODE" = "$want" ]; then ok "$name: $CODE"; else bad "$name: $CODE, expected $want: ${BODY:0:300}"; fi
}
field() { printf '%s' "$BODY" | node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>{try{const v=process.argv[1].split(".").reduce((o,k)=>o==null?o:o[k],JSON.parse(s));console.log(v==null?"":v)}catch{console.log("")}})' "$1"; }

# Readiness through nginx; on a busy machine one RabbitMQ check can time out
# (DB_TIMEOUT_MS), so a few tries.
for _ in $(seq 1 10); do fetch GET /health; [ "$CODE" = 200 ] && break; echo "  /health: $CODE ${BODY:0:300}"; sleep 2; done
call "GET /health" 200 GET /health
call "GET /metrics is not routed by nginx" 404 GET /metrics
NAME="walker$$"
call "register $NAME" 201 POST /v1/auth/register "{\"user_name\":\"$NAME\",\"password\":\"s3cret-pass\"}"
call "login" 201 POST /v1/auth/login "{\"user_name\":\"$NAME\",\"password\":\"s3cret-pass\"}"
S=$(field session_id)
H="Authorization: session_id $S"
call "create chat" 201 POST /v1/chats '{"chat_name":"general"}' "$H"
CHAT=$(field chat_id)
call "join chat" 201 POST "/v1/chats/$CHAT/users" '{"user_name":"Walker"}' "$H"
ME=$(field user_id)
call "post hello" 201 POST "/v1/chats/$CHAT/messages?user_id=$ME" '{"message":"hello from the image"}' "$H"
call "post second" 201 POST "/v1/chats/$CHAT/messages?user_id=$ME" '{"message":"second message"}' "$H"
call "first page" 200 GET "/v1/chats/$CHAT/messages?limit=1" "" "$H"
FIRST=$(field messages.0.text)
NEXT=$(field next.iterator)
if [ "$FIRST" = "hello from the image" ]; then ok "first page holds the first message"; else bad "first page: $BODY"; fi
call "next page" 200 GET "/v1/chats/$CHAT/messages?limit=10&from=$NEXT" "" "$H"
if [ "$(field messages.0.text)" = "second message" ]; then ok "next page holds the second message"; else bad "next page: $BODY"; fi
call "search" 201 POST /v1/chats/search '{"message":"hello"}' "$H"
TASK=$(field task_id)
status=
for _ in $(seq 1 120); do
  [ "$(limit 10)" -lt 10 ] && break
  fetch GET "/v1/chats/search/status/$TASK" "" "$H"
  status=$(field status)
  case $status in SUCCESS|FAILED) break ;; esac
  sleep 0.5
done
if [ "$status" = SUCCESS ]; then ok "search task SUCCESS (run by the consumer container)"; else bad "search task: ${status:-no status}: $BODY"; fi
call "search results" 200 GET "/v1/chats/search/$TASK/messages?limit=10" "" "$H"
if [ "$(field messages.0.text)" = "hello from the image" ]; then ok "search found the message"; else bad "search results: $BODY"; fi
call "logout" 200 POST /v1/auth/logout "" "$H"
call "the session is dead" 401 GET /v1/chats "" "$H"

phase "both replicas served and the consumer ran the task"
for s in web1 web2; do
  n=$(timeout 20 "${PODMAN[@]}" logs "$(cid $s)" 2>&1 | grep -c '"path":"/v1/')
  if [ "${n:-0}" -gt 0 ]; then ok "$s answered $n API requests"; else bad "$s answered no API request"; fi
done
if timeout 20 "${PODMAN[@]}" logs "$(cid consumer)" 2>&1 | grep -q "$TASK"; then
  ok "consumer logged task $TASK"
else
  echo "  (consumer log does not name the task; its status above says it ran)"
fi
exit 0
