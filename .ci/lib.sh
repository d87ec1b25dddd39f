# Shared by .ci/run: counted steps, time bounds, mocha counts and test floors.
# Sourced, not run; the caller reads PASSED, FAILED, STATUS and RAN.
# shellcheck shell=bash

PASSED=0
FAILED=0
STATUS=0
LOG_DIR=$(mktemp -d)
DEADLINE=${CI_DEADLINE_SECONDS:-2400}
FLOOR_FILE=.ci/test-floor.json

step() { printf '\n=== %s  (%d s elapsed)\n' "$*" "$SECONDS"; }
fail() { FAILED=$((FAILED + 1)); STATUS=1; }

# Runs "$@" for at most $1 seconds, and never past the run's deadline; the
# whole process group is killed then (exit 124, a failure).
bounded() {
  local limit=$1; shift
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -le 0 ]; then
    echo "out of time: the run's ${DEADLINE} s are spent, not starting: $*"
    return 124
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  [ "$rc" -eq 124 ] && echo "timed out after ${limit} s: $*"
  return "$rc"
}

# A counted step that is not a test suite: one pass or one failure.
check() {
  local name=$1 limit=$2; shift 2
  step "$name"
  if bounded "$limit" "$@"; then PASSED=$((PASSED + 1)); else fail; fi
}

# The floor of suite $1 from $FLOOR_FILE; fails when it has none.
floor() {
  node -e 'const v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))[process.argv[2]];
    if (!Number.isInteger(v)) process.exit(1); console.log(v)' "$FLOOR_FILE" "$1"
}

# Tests each suite ran (passed + failed), by name, for the floors.
declare -A RAN=()

# Mocha's spec reporter ends with "N passing" and, when any failed, "M failing"
# (and "K pending", which forbidPending turns into failures).
count_mocha() {
  local name=$1 log=$2 p f
  p=$(grep -Eo '^\s*[0-9]+ passing' "$log" | tail -1 | grep -Eo '[0-9]+' || true)
  f=$(grep -Eo '^\s*[0-9]+ failing' "$log" | tail -1 | grep -Eo '[0-9]+' || true)
  PASSED=$((PASSED + ${p:-0}))
  FAILED=$((FAILED + ${f:-0}))
  RAN[$name]=$(( ${p:-0} + ${f:-0} ))
  if [ -z "${p:-}" ] && [ -z "${f:-}" ]; then
    echo "no test counts found in $log: counting the run as one failure"
    fail
  fi
}

# Fails the suite (one more failure) when it ran fewer than $2 tests; $3 says
# where the minimum comes from.
check_floor() {
  local name=$1 min=$2 why=${3:-floor in $FLOOR_FILE} ran=${RAN[$1]:-0}
  if [ "$ran" -lt "$min" ]; then
    echo "$name ran $ran tests, fewer than $min ($why): counting one more failure"
    fail
  else
    echo "$name ran $ran tests (at least $min: $why)"
  fi
}

run_suite() {
  local name=$1 limit=$2; shift 2
  step "$name"
  local log="$LOG_DIR/$name.log" min
  bounded "$limit" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  count_mocha "$name" "$log"
  if [ "$rc" -ne 0 ]; then STATUS=1; fi
  if min=$(floor "$name"); then
    check_floor "$name" "$min"
  else
    echo "no floor for $name in $FLOOR_FILE: counting one failure"
    fail
  fi
}

