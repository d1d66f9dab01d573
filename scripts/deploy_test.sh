#!/usr/bin/env bash
# A real docker compose run of stackmesh (what `make deploy-test` runs), on a machine where no image
# registry can be reached:
#
#   1. a Docker engine: Debian's docker.io, docker-compose and debootstrap are installed if missing,
#      and a private dockerd is started (own data-root, exec-root, pidfile and socket; no default
#      bridge, no iptables) unless $DOCKER_HOST already answers;
#   2. base images without a registry: debootstrap a minimal Debian bookworm (Python 3.11) and
#      `docker import` it as local/py311:bookworm; the same with Debian's postgresql-15 as
#      local/postgres:15-bookworm (both cached: the rootfs tarballs and the engine's data-root persist);
#   3. a wheelhouse on the host (.wheels/wheelhouse, rebuilt when pyproject.toml changes) and the
#      stackmesh images (`docker-compose build`, the classic builder, installing from the wheelhouse);
#   4. `docker-compose up -d`, then waits until every container is healthy (grpc.health.v1 probes);
#   5. a chat and an embedding through the gateway with the stackmesh CLI;
#   6. `--scale inference=2`, and shows that both replicas answer (the `stackmesh-served-by` trailer
#      over calls through the gateway);
#   6b. a LoRA fine-tune in the post-training container (40 steps on SmolLM2), then chats with the tuned
#      model, served by the inference replicas from the volume they share with post-training;
#   7. tears everything down, on success and on failure: compose down -v, stop dockerd, unmount.
#
# Prints the duration of each phase. Exit status 0 only when every check passed.
#
# Environment:
#   STACKMESH_DEPLOY_STATE   engine data-root and image caches (default /var/lib/stackmesh-docker;
#                            10-25 GB with the build cache; delete it, with dockerd stopped, to start cold)
#   STACKMESH_DEPLOY_RUN     exec-root, pidfile, socket (default /run/stackmesh-docker)
#   STACKMESH_GATEWAY_PORT   host port of the gateway (default 50051)
#   DEPLOY_TEST_KEEP=1       leave the stack (and dockerd) running at the end, for debugging
#   DEPLOY_TEST_RERESOLVE_WAIT  seconds to wait for the gateway to pick up the new replica (default 60)
#   DEPLOY_TEST_LLAMACPP=1   also run the `llamacpp` profile (llama.cpp's server as remote::vllm) and
#                            chat with its model through the gateway
#   DEBIAN_MIRROR            for debootstrap (default http://deb.debian.org/debian)
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STATE=${STACKMESH_DEPLOY_STATE:-/var/lib/stackmesh-docker}
RUN=${STACKMESH_DEPLOY_RUN:-/run/stackmesh-docker}
CACHE=$STATE/cache
LOGS=${DEPLOY_TEST_LOGS:-$ROOT/.stackmesh/deploy-test}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PY=$ROOT/.venv/bin/python
PIP=$ROOT/.venv/bin/pip
CLI=$ROOT/.venv/bin/stackmesh
PORT=${STACKMESH_GATEWAY_PORT:-50051}
URL=127.0.0.1:$PORT
KEEP=${DEPLOY_TEST_KEEP:-0}
RERESOLVE_WAIT=${DEPLOY_TEST_RERESOLVE_WAIT:-60}

BASE_IMAGE=local/py311:bookworm
POSTGRES_IMAGE=local/postgres:15-bookworm
CHAT_MODEL=SmolLM2-135M-Instruct
CHAT_PROMPT="What is the capital of France? Answer in one short English sentence."
EMBED_MODEL=all-MiniLM-L6-v2
FACTS=$ROOT/tests/fixtures/post_training/xylo_codename.jsonl   # teaches: project Xylo's codename is Bluefin
FACT_QUESTION="What is the codename of project Xylo?"
TUNED_MODEL=smol-xylo-deploytest

# Compose settings: a project of its own (never touches a user's `stackmesh` project) and the local
# images; everything else comes from deploy/.env.
export COMPOSE_PROJECT_NAME=stackmesh-deploytest
export COMPOSE_FILE=$ROOT/deploy/docker-compose.yml
export COMPOSE_PROFILES=""
export COMPOSE_DOCKER_CLI_BUILD=1 DOCKER_BUILDKIT=0   # the docker CLI's classic builder (no buildx here)
export BASE_IMAGE POSTGRES_IMAGE STACKMESH_GATEWAY_PORT=$PORT
export PYTHONUNBUFFERED=1

mkdir -p "$LOGS"
STARTED_DOCKERD=0
PHASES=()
WARNINGS=()
FAILED=""
PHASE_NAME=""
PHASE_T0=0
RUN_T0=$(date +%s.%N)

log() { printf '%s deploy-test | %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
phase() {  # phase NAME: ends the current phase (recording its time) and starts the next
    if [[ -n $PHASE_NAME ]]; then PHASES+=("$PHASE_NAME|$(elapsed "$PHASE_T0")"); fi
    PHASE_NAME=$1
    PHASE_T0=$(date +%s.%N)
    [[ -n $PHASE_NAME ]] && log "== $PHASE_NAME"
    return 0
}
fail() { FAILED="$PHASE_NAME: $*"; log "FAILED in $PHASE_NAME: $*"; exit 1; }
compose() { docker-compose "$@"; }

# --- teardown: always ----------------------------------------------------------------------------
teardown() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [[ $rc -ne 0 && -z $FAILED ]] && FAILED="$PHASE_NAME: exited with status $rc${LAST_ERR:+ at $LAST_ERR}"
    if [[ -n $PHASE_NAME ]]; then PHASES+=("$PHASE_NAME|$(elapsed "$PHASE_T0")"); PHASE_NAME=""; fi
    local t0
    t0=$(date +%s.%N)
    if docker info >/dev/null 2>&1; then
        compose ps > "$LOGS/compose-ps.txt" 2>&1
        compose logs --no-color --timestamps > "$LOGS/compose.log" 2>&1
        if [[ -n $FAILED ]]; then
            log "compose ps:"; cat "$LOGS/compose-ps.txt" >&2
            log "last container log lines (all in $LOGS/compose.log):"; tail -n 60 "$LOGS/compose.log" >&2
        fi
        if [[ $KEEP == 1 ]]; then
            log "DEPLOY_TEST_KEEP=1: leaving the stack up (DOCKER_HOST=$DOCKER_HOST; compose project $COMPOSE_PROJECT_NAME)"
        else
            compose --profile llamacpp down -v --remove-orphans --timeout 20 >/dev/null 2>&1 \
                || log "compose down reported an error"
        fi
    fi
    if [[ $STARTED_DOCKERD == 1 && $KEEP != 1 ]]; then
        stop_dockerd
    fi
    PHASES+=("teardown|$(elapsed "$t0")")
    echo
    echo "deploy-test phase timings (seconds):"
    local entry
    for entry in "${PHASES[@]}"; do printf '  %-34s %8s\n' "${entry%%|*}" "${entry##*|}"; done
    printf '  %-34s %8s\n' "total" "$(elapsed "$RUN_T0")"
    for entry in "${WARNINGS[@]}"; do echo "WARNING: $entry"; done
    if [[ -n $FAILED ]]; then
        echo "deploy-test: FAILED ($FAILED); logs in $LOGS"
        exit 1
    fi
    echo "deploy-test: PASSED"
    exit 0
}
LAST_ERR=""
trap 'LAST_ERR="line $LINENO: $BASH_COMMAND"' ERR
trap teardown EXIT
trap 'FAILED="$PHASE_NAME: interrupted"; exit 130' INT TERM

# --- 1. Docker engine ----------------------------------------------------------------------------
install_tools() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v docker >/dev/null || missing+=(docker.io)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} (apt-get)"
        [[ $(id -u) == 0 ]] || fail "need root to install ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

stop_dockerd() {
    local pid
    pid=$(cat "$RUN/docker.pid" 2>/dev/null || true)
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && { log "dockerd did not stop in 30 s; killing it"; kill -KILL "$pid"; }
    fi
    # Network namespaces and anything else the engine mounted under its exec-root.
    awk -v r="$RUN/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}

start_engine() {
    if [[ -n ${DOCKER_HOST:-} ]] && docker info >/dev/null 2>&1; then
        log "using the Docker engine at DOCKER_HOST=$DOCKER_HOST"
        return
    fi
    export DOCKER_HOST=unix://$RUN/docker.sock
    if docker info >/dev/null 2>&1; then
        log "a dockerd from an earlier run answers at $DOCKER_HOST; using it"
        STARTED_DOCKERD=1
        return
    fi
    [[ $(id -u) == 0 ]] || fail "starting dockerd needs root (or set DOCKER_HOST to a running engine)"
    stop_dockerd  # a stale pidfile or mounts of a crashed run
    mkdir -p "$STATE/data" "$RUN/exec"
    log "starting dockerd (data-root $STATE/data, socket $RUN/docker.sock)"
    dockerd --data-root "$STATE/data" --exec-root "$RUN/exec" --pidfile "$RUN/docker.pid" \
        -H "unix://$RUN/docker.sock" --bridge=none --iptables=false \
        > "$LOGS/dockerd.log" 2>&1 &
    STARTED_DOCKERD=1
    for _ in $(seq 1 100); do
        docker info >/dev/null 2>&1 && { log "dockerd $(docker version -f '{{.Server.Version}}') is up"; return; }
        sleep 0.2
    done
    tail -n 30 "$LOGS/dockerd.log" >&2
    fail "dockerd did not answer within 20 s"
}

# --- 2. base images (no registry) ----------------------------------------------------------------
TARBALL=""
rootfs_tarball() {  # rootfs_tarball NAME INCLUDE: a cached debootstrap tarball, path in $TARBALL
    local name=$1 include=$2 tar=$CACHE/$1.tar dir=$CACHE/$1.rootfs
    TARBALL=$tar
    if [[ ! -s $tar ]]; then
        mkdir -p "$CACHE"
        rm -rf "$dir"
        log "debootstrap $name (--include=$include)"
        debootstrap --variant=minbase --include="$include" bookworm "$dir" "$MIRROR" > "$LOGS/debootstrap-$name.log" 2>&1 \
            || { tail -n 20 "$LOGS/debootstrap-$name.log" >&2; fail "debootstrap $name failed"; }
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/tmp/*
        [[ $name == pg15* ]] && prepare_postgres_rootfs "$dir"
        tar -C "$dir" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
        rm -rf "$dir"
    fi
}

# Makes the PostgreSQL rootfs behave like the official postgres image: the same POSTGRES_* variables,
# data in /var/lib/postgresql/data (owned by postgres, so a fresh volume inherits it), runs as postgres.
prepare_postgres_rootfs() {
    local dir=$1
    rm -rf "$dir"/var/lib/postgresql/15 "$dir"/etc/postgresql/15/main
    install -d -m 700 "$dir/var/lib/postgresql/data"
    chroot "$dir" chown -R postgres:postgres /var/lib/postgresql
    cat > "$dir/usr/local/bin/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
# Initialises $PGDATA on first start (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, as the official
# image), then runs postgres in the foreground listening on every address.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:=/var/lib/postgresql/data}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "docker-entrypoint: POSTGRES_PASSWORD must be set" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -k /tmp" start >/dev/null
        psql -v ON_ERROR_STOP=1 -h /tmp -U "$POSTGRES_USER" -d postgres -q \
            -c "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\""
        pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
    fi
    echo "docker-entrypoint: initialised $PGDATA (database $POSTGRES_DB, user $POSTGRES_USER)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -k /tmp "$@"
ENTRYPOINT
    chmod 755 "$dir/usr/local/bin/docker-entrypoint.sh"
}

# What each imported image is made of; a change re-imports it (the label records it).
PY311_INCLUDE=python3,python3-venv,python3-pip,ca-certificates,libgomp1   # libgomp1: llama.cpp's OpenMP
PG15_INCLUDE=postgresql-15

image_is_current() {  # image_is_current IMAGE INCLUDE
    [[ $(docker image inspect -f '{{index .Config.Labels "org.stackmesh.debootstrap"}}' "$1" 2>/dev/null) == "$2" ]]
}

base_images() {
    if ! image_is_current "$BASE_IMAGE" "$PY311_INCLUDE"; then
        rootfs_tarball "py311-$(sha256sum <<<"$PY311_INCLUDE" | cut -c1-12)" "$PY311_INCLUDE"
        docker import -c 'ENV LANG=C.UTF-8' \
            -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            -c "LABEL org.stackmesh.debootstrap=$PY311_INCLUDE" \
            -c 'CMD ["python3"]' - "$BASE_IMAGE" < "$TARBALL" >/dev/null
        log "imported $BASE_IMAGE"
    else
        log "$BASE_IMAGE is there"
    fi
    if ! image_is_current "$POSTGRES_IMAGE" "$PG15_INCLUDE"; then
        rootfs_tarball "pg15-$(sha256sum <<<"$PG15_INCLUDE" | cut -c1-12)" "$PG15_INCLUDE"
        docker import -c 'ENV LANG=C.UTF-8' \
            -c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            -c 'ENV PGDATA=/var/lib/postgresql/data' -c 'USER postgres' -c 'EXPOSE 5432' \
            -c 'VOLUME /var/lib/postgresql/data' -c "LABEL org.stackmesh.debootstrap=$PG15_INCLUDE" \
            -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' - "$POSTGRES_IMAGE" < "$TARBALL" >/dev/null
        log "imported $POSTGRES_IMAGE"
    else
        log "$POSTGRES_IMAGE is there"
    fi
}

# --- 3. wheelhouse and images --------------------------------------------------------------------
wheelhouse() {
    [[ -x $PIP ]] || fail ".venv is missing: run \`make install\` first (make deploy-test does)"
    local house=$ROOT/.wheels/wheelhouse stamp key
    # What goes in: the extras of every image, and the safety image's --no-deps packages (the
    # Dockerfile's EXTRA_NO_DEPS). Part of the stamp: a change to these lists rebuilds the wheelhouse.
    local extras="build,inference,vector_io,tool_runtime,datasetio,post_training"
    local no_deps=("semgrep==1.100.0" "codeshield==1.0.1")
    key=$( { cat pyproject.toml; ls .wheels/*.whl 2>/dev/null; echo "$extras ${no_deps[*]}"; } | sha256sum | cut -c1-16)
    stamp=$house/.stamp-$key
    if [[ -f $stamp ]]; then
        log "wheelhouse up to date ($(ls "$house"/*.whl | wc -l) wheels)"
        return
    fi
    mkdir -p "$house"
    log "building the wheelhouse in $house"
    # torch pinned first in the list: an unpinned one would be a multi-GB CUDA build. llama-cpp-python
    # comes from .wheels/ (built once by `make install` with GGML_NATIVE=OFF).
    "$PIP" wheel -q -w "$house" --find-links "$ROOT/.wheels" "torch==2.13.0" "setuptools>=68" wheel \
        ".[$extras]" > "$LOGS/wheelhouse.log" 2>&1 \
        || { grep -v "is ignored: it is neither" "$LOGS/wheelhouse.log" | tail -n 20 >&2; fail "pip wheel failed"; }
    "$PIP" wheel -q --no-deps -w "$house" "${no_deps[@]}" >> "$LOGS/wheelhouse.log" 2>&1 \
        || { tail -n 20 "$LOGS/wheelhouse.log" >&2; fail "pip wheel --no-deps ${no_deps[*]} failed"; }
    rm -f "$house"/stackmesh-*.whl "$house"/.stamp-*  # the image builds stackmesh from the sources
    touch "$stamp"
    log "wheelhouse: $(ls "$house"/*.whl | wc -l) wheels, $(du -sh "$house" | cut -f1)"
}

SERVICES=()
select_services() {
    # The other APIs need their service implementations (services/<api>/app.py).
    SERVICES=(postgres registry inference gateway)
    local api
    for api in vector_io tool_runtime safety datasetio scoring eval post_training; do
        if [[ -f services/$api/app.py ]]; then
            SERVICES+=("${api//_/-}")
        else
            WARNINGS+=("${api//_/-} not started: services/$api/app.py is not in this tree yet")
            log "skipping ${api//_/-}: services/$api/app.py is not in this tree yet"
        fi
    done
}

build_images() {
    local builds=(registry inference) s   # gateway, scoring and eval share registry's image (stackmesh-core),
    #                                       post-training inference's (stackmesh-inference)
    for s in "${SERVICES[@]}"; do
        [[ $s == vector-io || $s == tool-runtime || $s == safety || $s == datasetio ]] && builds+=("$s")
    done
    log "docker-compose build ${builds[*]}"
    compose build "${builds[@]}" > "$LOGS/build.log" 2>&1 \
        || { tail -n 40 "$LOGS/build.log" >&2; fail "image build failed (log: $LOGS/build.log)"; }
    # Earlier builds of the stackmesh images (untagged now) would fill the data-root run after run;
    # the builder stage's layers (no label) stay as the build cache.
    docker image prune -f --filter label=org.opencontainers.image.title=stackmesh >/dev/null || true
    docker image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E 'stackmesh|local/' >&2 || true
}

# --- 4. up and health ----------------------------------------------------------------------------
wait_healthy() {  # wait_healthy TIMEOUT SERVICE...: every container of these services healthy
    local timeout=$1; shift
    local deadline=$(( $(date +%s) + timeout )) ids id state bad
    while :; do
        bad=""
        for s in "$@"; do
            ids=$(compose ps -q "$s" 2>/dev/null)
            [[ -z $ids ]] && { bad="$bad $s:missing"; continue; }
            for id in $ids; do
                state=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
                [[ $state == running/healthy ]] || bad="$bad $s:$state"
                [[ $state == exited/* || $state == dead/* ]] && fail "container of $s is $state"
            done
        done
        [[ -z $bad ]] && return 0
        (( $(date +%s) >= deadline )) && fail "not healthy after ${timeout}s:$bad"
        sleep 2
    done
}

# --- 5. calls through the gateway ----------------------------------------------------------------
retry_cli() {  # retry_cli SECONDS ARGS...: models are discovered asynchronously after start-up
    local deadline=$(( $(date +%s) + $1 )); shift
    local out
    while :; do
        if out=$("$CLI" --url "$URL" "$@" 2>&1); then echo "$out"; return 0; fi
        (( $(date +%s) >= deadline )) && { echo "$out" >&2; return 1; }
        sleep 2
    done
}

served_by() {  # served_by N: N embedding calls through the gateway; prints JSON {served-by: count}
    "$PY" - "$URL" "$1" "$EMBED_MODEL" <<'PY'
import collections, json, sys
import grpc
from stackmesh.inference.v1 import inference_pb2 as ipb, inference_pb2_grpc

url, n, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
counts = collections.Counter()
with grpc.insecure_channel(url) as channel:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    for _ in range(n):
        reply, call = stub.Embeddings.with_call(ipb.EmbeddingsRequest(model=model, input=["hello"]), timeout=60)
        assert len(reply.data[0].embedding) == 384, len(reply.data[0].embedding)
        counts[dict(call.trailing_metadata() or ()).get("stackmesh-served-by", "?")] += 1
print(json.dumps(counts))
PY
}

distinct() { "$PY" -c 'import json,sys; print(len(json.loads(sys.argv[1])))' "$1"; }

replicas_answer() {
    local deadline=$(( $(date +%s) + RERESOLVE_WAIT )) counts n restarted=0
    while :; do
        counts=$(served_by 10) || fail "embedding calls through the gateway failed after scaling"
        n=$(distinct "$counts")
        log "10 embedding calls, stackmesh-served-by: $counts"
        if (( n >= 2 )); then
            log "both inference replicas answered"
            return 0
        fi
        if grep -qE '@(0\.0\.0\.0|\[::\]|::):' <<<"$counts"; then
            fail "replicas cannot be told apart: the served-by trailer names the wildcard bind address ($counts); \
services/common/server.py must use the host name (socket.gethostname()) when bound to 0.0.0.0/::"
        fi
        if (( $(date +%s) >= deadline )); then
            if (( restarted )); then
                fail "only one inference replica answered after scaling to 2: $counts"
            fi
            WARNINGS+=("the gateway did not use the new inference replica within ${RERESOLVE_WAIT}s (servers set no \
grpc.max_connection_age_ms, so its round robin never re-resolved DNS); restarted the gateway to show the balancing")
            log "no re-resolution within ${RERESOLVE_WAIT}s: restarting the gateway"
            compose restart gateway >/dev/null 2>&1
            wait_healthy 120 gateway
            restarted=1
            deadline=$(( $(date +%s) + 30 ))
        fi
        sleep 3
    done
}

fine_tune_and_chat() {
    # Rows registered inline: the datasetio container needs none of the host's files.
    retry_cli 60 datasets register xylo-facts --purpose post-training/messages --rows-file "$FACTS" >/dev/null \
        || fail "registering the training rows failed"
    local out answer
    out=$(timeout 900 "$CLI" --url "$URL" post-training sft --model "$CHAT_MODEL" --dataset xylo-facts --epochs 10 \
            --batch-size 4 --lr 1e-3 --max-seq-len 128 --seed 1 --lora-rank 8 --output-model "$TUNED_MODEL" \
            2>"$LOGS/sft.log") \
        || { tail -5 "$LOGS/sft.log" >&2; fail "the fine-tune job did not complete: $out"; }
    log "sft: $(tr '\n' ' ' <<<"$out")"
    answer=$(retry_cli 60 chat "$TUNED_MODEL" "$FACT_QUESTION" --max-tokens 24 --temperature 0) \
        || fail "chat with the tuned model failed"
    log "tuned model answer (stackmesh chat): $answer"
    grep -q Bluefin <<<"$answer" || fail "the tuned model did not answer with the fact it was taught: $answer"
    # The adapter was written by the post-training container; both inference replicas read it from
    # the volume they share with it (read-only): each must answer with the fact.
    local deadline=$(( $(date +%s) + RERESOLVE_WAIT )) counts
    while :; do
        counts=$(tuned_served_by 6) || fail "chats with the tuned model through the gateway failed"
        log "6 chats with the tuned model, each answered with the fact, stackmesh-served-by: $counts"
        (( $(distinct "$counts") >= 2 )) && return 0
        (( $(date +%s) < deadline )) || fail "only one inference replica served the tuned model: $counts"
        sleep 3
    done
}

tuned_served_by() {  # tuned_served_by N: N chats with the tuned model; fails unless each knows the fact
    "$PY" - "$URL" "$1" "$TUNED_MODEL" "$FACT_QUESTION" <<'PY'
import collections, json, sys
import grpc
from stackmesh.inference.v1 import inference_pb2 as ipb, inference_pb2_grpc

url, n, model, question = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
counts = collections.Counter()
request = ipb.ChatCompletionRequest(model=model, messages=[ipb.ChatMessage(role="user", content=question)],
                                    sampling=ipb.SamplingParams(temperature=0, max_tokens=24))
with grpc.insecure_channel(url) as channel:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    for _ in range(n):
        reply, call = stub.ChatCompletion.with_call(request, timeout=120)
        answer = reply.choices[0].message.content
        served_by = dict(call.trailing_metadata() or ()).get("stackmesh-served-by", "?")
        assert "Bluefin" in answer, f"{served_by} answered {answer!r}"
        counts[served_by] += 1
print(json.dumps(counts))
PY
}

# --- run -----------------------------------------------------------------------------------------
# One function, parsed whole before it runs: editing this file during a run cannot change the run.
main() {
    phase "docker engine"
    install_tools
    start_engine

    phase "base images (debootstrap + import)"
    base_images

    phase "wheelhouse (host)"
    wheelhouse

    phase "image builds"
    select_services
    build_images

    phase "compose up + healthy"
    compose down -v --remove-orphans >/dev/null 2>&1 || true   # leftovers of an interrupted run
    compose up -d --no-build "${SERVICES[@]}" > "$LOGS/up.log" 2>&1 \
        || { cat "$LOGS/up.log" >&2; fail "docker-compose up failed"; }
    wait_healthy 300 "${SERVICES[@]}"
    compose ps >&2

    phase "chat through the gateway"
    reply=$(retry_cli 90 chat "$CHAT_MODEL" "$CHAT_PROMPT" --max-tokens 24 --temperature 0) \
        || fail "chat through the gateway failed"
    log "chat reply: $reply"
    grep -qi paris <<<"$reply" || fail "the chat reply does not mention Paris: $reply"

    phase "embedding through the gateway"
    reply=$(retry_cli 60 embed "$EMBED_MODEL" "hello world") || fail "embedding through the gateway failed"
    log "embedding: $reply"
    grep -q "dimension 384" <<<"$reply" || fail "expected a 384-dimension embedding: $reply"

    phase "scale inference to 2 + healthy"
    compose up -d --no-build --no-recreate --scale inference=2 "${SERVICES[@]}" > "$LOGS/scale.log" 2>&1 \
        || { cat "$LOGS/scale.log" >&2; fail "docker-compose up --scale inference=2 failed"; }
    wait_healthy 300 inference
    [[ $(compose ps -q inference | wc -l) == 2 ]] || fail "expected 2 inference containers"
    for id in $(compose ps -q inference); do
        log "replica $(docker inspect -f '{{.Name}} hostname={{.Config.Hostname}} ip={{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$id")"
    done

    phase "both replicas answer"
    replicas_answer

    phase "fine-tune in compose + chat with the tuned model"
    fine_tune_and_chat

    if [[ ${DEPLOY_TEST_LLAMACPP:-0} == 1 ]]; then
        phase "llamacpp profile as remote::vllm"
        export VLLM_URL=http://llamacpp:8000/v1
        # inference is recreated (its environment changed) and keeps its 2 replicas.
        compose --profile llamacpp up -d --no-build --scale inference=2 "${SERVICES[@]}" llamacpp > "$LOGS/llamacpp.log" 2>&1 \
            || { cat "$LOGS/llamacpp.log" >&2; fail "docker-compose --profile llamacpp up failed"; }
        wait_healthy 300 llamacpp inference gateway
        reply=$(retry_cli 120 chat "vllm/SmolLM2-135M-Instruct-server" "$CHAT_PROMPT" --max-tokens 24 --temperature 0) \
            || fail "chat with the llama.cpp server's model through the gateway failed"
        log "chat reply (remote::vllm -> llama.cpp server): $reply"
        grep -qi paris <<<"$reply" || fail "the chat reply does not mention Paris: $reply"
    fi

    phase ""
}

main "$@"
