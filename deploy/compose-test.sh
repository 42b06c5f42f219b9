#!/usr/bin/env bash
# The container test: builds the offline image, starts deploy/docker-compose.yml (nodes
# started as the StatefulSet starts pods: same command, node.toml, environment, ports) and
# checks that they form one cluster: the seed initialises it, the others join as learners by
# themselves; an operator promotes two of them; a write through a learner is read everywhere;
# a face photograph is enrolled and verified with the face models the image carries; the
# stopped leader hands leadership over (SIGTERM); restarted with its data, it resumes.
# Needs Python 3 (the photographs: ORL images of node/biometrics/models/fetch.sh).
#
#   deploy/compose-test.sh [BINARY]      (default: the ci-profile build, as build-image.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

project="quorumid-compose-test"
compose() { docker-compose --ansi never -p "$project" -f deploy/docker-compose.yml "$@"; }
admin() { compose exec -T "$1" quorumid --node "http://$1:7100" "${@:2}"; }
fail() { echo "compose-test: FAILED: $*" >&2; compose logs --no-color >&2 || true; exit 1; }
# wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds.
wait_for() {
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "no $what within ${limit}s"
    sleep 1
  done
}
# (Read the whole answer first: grep -q would close the pipe early, and pipefail would fail.)
member() { local s; s="$(admin "$1" cluster status)" && grep -Eq "^$2 +[A-Z]+ +$3 " <<<"$s"; }
leader_is_one_of() { local s; s="$(admin "$1" cluster status)" && grep -Eq "leader ($2)( |$)" <<<"$s"; }
# photo SUBJECT IMAGE: ORL image s<SUBJECT>/<IMAGE>.pgm as a client would send it, prepared as
# the node's tests prepare it (node/tests/face_images.rs: 92x112 doubled with bilinear
# interpolation, then 40 px of replicated border; YuNet misses the raw image's small face), as
# a binary PGM on standard output.
photo() {
  python3 - "$models/orl/s$1/$2.pgm" <<'PY'
import sys
w, h = 92, 112
gray = open(sys.argv[1], "rb").read()[-w * h:]
px = lambda x, y: gray[min(max(y, 0), h - 1) * w + min(max(x, 0), w - 1)]
def taps(n):  # source index and weight of the next one, for each of 2n outputs
    return [(int((d + 0.5) / 2 - 0.5 + 1) - 1, ((d + 0.5) / 2 - 0.5) % 1) for d in range(2 * n)]
big = [[round((1 - fy) * ((1 - fx) * px(x, y) + fx * px(x + 1, y))
              + fy * ((1 - fx) * px(x, y + 1) + fx * px(x + 1, y + 1)))
        for x, fx in taps(w)] for y, fy in taps(h)]
pad = 40
rows = [big[min(max(y - pad, 0), 2 * h - 1)] for y in range(2 * h + 2 * pad)]
out = bytearray(f"P5\n{2 * w + 2 * pad} {2 * h + 2 * pad}\n255\n".encode())
for row in rows:
    out += bytes(row[min(max(x - pad, 0), 2 * w - 1)] for x in range(2 * w + 2 * pad))
sys.stdout.buffer.write(out)
PY
}

models="$(bash node/biometrics/models/fetch.sh)"

export QUORUMID_IMAGE="${QUORUMID_IMAGE:-quorumid-node:dev}"
deploy/build-image.sh "$QUORUMID_IMAGE" ${1:+"$1"} >/dev/null
QUORUMID_DOCUMENT_KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
QUORUMID_PSEUDONYM_KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
QUORUMID_STORAGE_KEY="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
export QUORUMID_DOCUMENT_KEY QUORUMID_PSEUDONYM_KEY QUORUMID_STORAGE_KEY

compose down -v --remove-orphans >/dev/null 2>&1 || true
trap 'compose down -v --remove-orphans >/dev/null 2>&1 || true' EXIT
compose up -d >/dev/null 2>&1 || fail "docker-compose up"

# The seed (node 100) initialises; 101, 200 and 300 join as learners by themselves.
wait_for "seed leading" 60 leader_is_one_of on-0 100
for id in 101 200 300; do
  wait_for "node $id as a learner" 60 member on-0 "$id" LEARNER
done
echo "compose-test: seed initialised the cluster; 101, 200, 300 joined as learners"

admin on-0 cluster promote 200 300 >/dev/null || fail "promote 200 300"
for id in 200 300; do
  wait_for "node $id as a voter" 30 member on-0 "$id" VOTER
done
echo "compose-test: 200 and 300 promoted: three voters"

enrolled="$(admin bc-0 enroll --province BC --document C0MP05E1 --authority-province BC)" \
  || fail "enroll through a learner"
identity="$(echo "$enrolled" | awk '/^enrolled/ { print $2 }')"
[ -n "$identity" ] || fail "no identity in: $enrolled"
everywhere="$(admin on-1 verify "$identity" --everywhere --level linearizable)" \
  || fail "verify everywhere"
[ "$(echo "$everywhere" | grep -c ACTIVE)" -eq 4 ] || fail "not ACTIVE at all four nodes: $everywhere"
echo "compose-test: a write through a learner is read at all four nodes"

# A face photograph (sent on stdin): the receiving learner embeds it with the image's models
# (NO_FACE_MODELS without them), and another node matches a second photograph of the same
# person, and not one of someone else.
enrolled="$(photo 10 1 | admin on-1 enroll --province ON --document F4CE0010 --face-image /dev/stdin \
  --authority-province ON)" || fail "enroll a face photograph: $enrolled"
face_identity="$(echo "$enrolled" | awk '/^enrolled/ { print $2 }')"
[ -n "$face_identity" ] || fail "no identity in: $enrolled"
same="$(photo 10 2 | admin qc-0 verify "$face_identity" --level linearizable --face-image /dev/stdin)" \
  || fail "verify with a photograph of the same person: $same"
grep -Eq "ACTIVE +match" <<<"$same" || fail "the same person's photograph did not match: $same"
rc=0
other="$(photo 35 1 | admin qc-0 verify "$face_identity" --level linearizable --face-image /dev/stdin 2>&1)" \
  || rc=$?
[ "$rc" -eq 3 ] && grep -q "no match" <<<"$other" \
  || fail "another person's photograph: exit $rc (not 3, a probe mismatch): $other"
echo "compose-test: a face photograph enrolled and verified with the image's face models"

# SIGTERM to the leader: it hands over before it exits.
compose stop on-0 >/dev/null 2>&1
grep -q "leadership handed over" <<<"$(compose logs --no-color on-0)" \
  || fail "the stopped leader did not hand over"
wait_for "a new leader" 30 leader_is_one_of qc-0 "200|300"
echo "compose-test: the stopped leader handed over"

# Restarted with its data, the seed resumes: it does not initialise again.
compose start on-0 >/dev/null 2>&1
wait_for "node 100 back as a voter" 60 member on-0 100 VOTER
[ "$(grep -c 'initialised a new cluster' <<<"$(compose logs --no-color on-0)")" -eq 1 ] \
  || fail "the seed initialised twice"
wait_for "node 100 to agree" 60 leader_is_one_of on-0 "200|300"
echo "compose-test: passed"
