#!/usr/bin/env bash
# `make kind-e2e`: the whole system on a throw-away kind cluster.
#
#   1. checks docker, kind, kubectl and helm;
#   2. creates a kind cluster and builds and loads the three images;
#   3. installs the chart with the development PostgreSQL;
#   4. dispatches a burst of jobs and waits for the operator to scale the workers out, then
#      back in once the queue is drained; checks that a `kubectl scale` is respected;
#   5. runs `helm test` (a Noop job end to end);
#   6. deletes the cluster (also on failure or Ctrl-C; KEEP_CLUSTER=1 keeps it for a look).
#
# Every wait has a deadline. Settings (environment): KIND_CLUSTER, NAMESPACE, BASE_IMAGE,
# IMAGE_PREFIX, IMAGE_TAG, BURST (jobs), KEEP_CLUSTER.
set -euo pipefail

cd "$(dirname "$0")/.."

KIND_CLUSTER=${KIND_CLUSTER:-passito-jobs-e2e}
NAMESPACE=${NAMESPACE:-passito}
RELEASE=passito-jobs
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
IMAGE_PREFIX=${IMAGE_PREFIX:-passito-jobs}
IMAGE_TAG=${IMAGE_TAG:-e2e}
BURST=${BURST:-300}
KEEP_CLUSTER=${KEEP_CLUSTER:-}
MAX_WORKERS=4
WORKER="$RELEASE-worker"
EXPORTER="$RELEASE-exporter"

log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

need() {
    local tool=$1 hint=$2
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed: $hint"
}

# wait_until SECONDS DESCRIPTION COMMAND...: run COMMAND every 2s until it succeeds.
wait_until() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "timed out after ${timeout}s waiting for: $what" >&2
            return 1
        fi
        sleep 2
    done
    echo "ok: $what"
}

k() { kubectl --context "kind-$KIND_CLUSTER" --namespace "$NAMESPACE" "$@"; }

# ---------------------------------------------------------------- 1. prerequisites
log "checking prerequisites"
need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/ (Helm 3.8 or newer)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is it running, may you use it?)"
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
    die "a kind cluster named $KIND_CLUSTER exists already: delete it (kind delete cluster --name $KIND_CLUSTER) or set KIND_CLUSTER"
fi

cleanup() {
    local status=$?
    if ((status != 0)); then
        echo "--- failed; state of namespace $NAMESPACE:" >&2
        k get all,workerautoscalers,jobs,events --ignore-not-found 2>&1 | tail -60 >&2 || true
        k logs "deployment/$RELEASE-operator" --tail=40 2>&1 >&2 || true
    fi
    if [[ -n "$KEEP_CLUSTER" ]]; then
        echo "KEEP_CLUSTER is set: the cluster stays (kind delete cluster --name $KIND_CLUSTER)"
    else
        log "deleting the kind cluster $KIND_CLUSTER"
        kind delete cluster --name "$KIND_CLUSTER" || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 2. cluster and images
log "creating the kind cluster $KIND_CLUSTER"
kind create cluster --name "$KIND_CLUSTER" --wait 180s

log "building the images from $BASE_IMAGE"
make images BASE_IMAGE="$BASE_IMAGE" IMAGE_PREFIX="$IMAGE_PREFIX" IMAGE_TAG="$IMAGE_TAG"
for service in worker supervisor health; do
    kind load docker-image --name "$KIND_CLUSTER" "$IMAGE_PREFIX-$service:$IMAGE_TAG"
done

# ---------------------------------------------------------------- 3. install
log "installing the chart with the development PostgreSQL"
# Short polling and cooldown so that the scale-in happens within the test's patience; kind's
# local-path storage offers ReadWriteOnce only (one node: every worker pod shares it anyway).
timeout 660 helm install "$RELEASE" charts/passito-jobs \
    --kube-context "kind-$KIND_CLUSTER" \
    --namespace "$NAMESPACE" --create-namespace \
    --set image.registry= \
    --set image.tag="$IMAGE_TAG" \
    --set image.pullPolicy=Never \
    --set postgresql.mode=bundled \
    --set "worker.storage.accessModes={ReadWriteOnce}" \
    --set worker.concurrency=5 \
    --set autoscaling.minReplicas=1 \
    --set autoscaling.maxReplicas=$MAX_WORKERS \
    --set autoscaling.scaleUpThreshold=5 \
    --set autoscaling.scaleDownThreshold=1 \
    --set autoscaling.pollingInterval=2 \
    --set autoscaling.cooldownPeriod=15 \
    --set autoscaling.manualOverrideSeconds=30 \
    --wait --timeout 10m

k rollout status "deployment/$WORKER" --timeout=180s
k rollout status "deployment/$RELEASE-operator" --timeout=180s
k rollout status "deployment/$EXPORTER" --timeout=180s

replicas() { k get deployment "$WORKER" -o jsonpath='{.spec.replicas}'; }
replicas_at_least() { (($(replicas) >= $1)); }
replicas_are() { (($(replicas) == $1)); }
queue_drained() {
    local left
    left=$(k exec "deployment/$EXPORTER" -- python -c \
        "import os, psycopg; print(psycopg.connect(os.environ['PASSITO_DATABASE_URL']).execute(\"SELECT count(*) FROM passito_jobs.jobs WHERE state IN ('pending', 'processing')\").fetchone()[0])")
    [[ "$left" == 0 ]]
}
override_condition() {
    [[ "$(k get workerautoscaler "$WORKER" \
        -o jsonpath='{.status.conditions[?(@.type=="ManualOverride")].status}')" == True ]]
}

# ---------------------------------------------------------------- 4. burst, scale out and in
log "dispatching a burst of $BURST Sleep jobs"
k exec "deployment/$EXPORTER" -- python -c \
    "import passito_jobs as p; print(len(p.dispatch_many([{'type': 'Sleep', 'payload': {'seconds': 2}}] * $BURST)), 'jobs dispatched')"

log "waiting for the operator to scale the workers out"
wait_until 180 "the worker Deployment at $MAX_WORKERS replicas" replicas_at_least "$MAX_WORKERS"
k get workerautoscaler "$WORKER"

log "waiting for the queue to drain and the workers to scale back in"
wait_until 600 "every burst job finished" queue_drained
wait_until 180 "the worker Deployment back at 1 replica" replicas_are 1
k get workerautoscaler "$WORKER"

log "a manual kubectl scale is respected"
k scale "deployment/$WORKER" --replicas=3
wait_until 60 "the ManualOverride condition" override_condition
sleep 10 # three polls: the operator must leave the manual replicas alone
replicas_are 3 || die "the operator overrode a manual kubectl scale within manualOverrideSeconds"
echo "ok: replicas held at 3"

# ---------------------------------------------------------------- 5. helm test
log "helm test"
timeout 360 helm test "$RELEASE" --kube-context "kind-$KIND_CLUSTER" --namespace "$NAMESPACE" \
    --timeout 5m --logs

log "kind end-to-end test passed"
