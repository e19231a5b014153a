#!/usr/bin/env bash
# The mc demo in the lab, from a fresh Linux machine (Debian/Ubuntu, as root,
# with a Rust toolchain and Go 1.26): two clusters, east and west; mc installed in both
# and linked both ways; a backend of 3 pods in east, exported; a client pod
# in west calls http://backend-east:8080/ and east's pods answer.
#
# It leaves the lab running to explore (the last lines say how) and can be
# re-run at any time: the lab is recreated from scratch.
#
# Environment: MC_DEMO_LAB (default demo) names the lab; MC_DEMO_TIMEOUT
# (default 90) is how many seconds each wait may take.
set -Eeuo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
LAB=${MC_DEMO_LAB:-demo}
TIMEOUT=${MC_DEMO_TIMEOUT:-90}
BIN="$REPO/target/debug"
STEPS=10
STEP=0
TITLE="preflight"

bold() { if [ -t 1 ]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }

step() {
  STEP=$((STEP + 1))
  TITLE=$1
  echo
  bold "==> [$STEP/$STEPS] $TITLE"
}

failed() {
  local code=$?
  echo >&2
  echo "demo FAILED at step $STEP/$STEPS: $TITLE (exit $code)" >&2
  if [ -d "/run/mc-lab/$LAB/logs" ]; then
    echo "  cluster daemons' logs: /run/mc-lab/$LAB/logs/<cluster>.log" >&2
    echo "  control plane, kube-proxy: /run/mc-lab/$LAB/logs/<cluster>-<component>.log" >&2
    echo "  pods' output:          /run/mc-lab/$LAB/logs/<cluster>/<namespace>_<pod>.log" >&2
    echo "  the lab:               $BIN/mc-lab --lab $LAB status" >&2
  fi
  exit "$code"
}
trap failed ERR

# Runs "$@" until it succeeds or $TIMEOUT seconds pass; then shows its last
# output and fails. $1 says what is awaited.
wait_until() {
  local what=$1 deadline=$((SECONDS + TIMEOUT)) out
  shift
  until out=$("$@" 2>&1); do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "timed out after ${TIMEOUT}s waiting for $what; last attempt said:" >&2
      echo "$out" >&2
      return 1
    fi
    sleep 1
  done
  echo "  $what: ok"
}

# The cargo of the user who ran sudo, when root has none on its PATH.
find_cargo() {
  if command -v cargo >/dev/null 2>&1; then
    command -v cargo
  elif [ -n "${SUDO_USER:-}" ] && [ -x "$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin/cargo" ]; then
    echo "$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin/cargo"
  else
    return 1
  fi
}

if [ "$(uname -s)" != Linux ]; then
  echo "the lab needs Linux (network namespaces, nftables)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "the lab creates network namespaces: run as root (sudo $0)" >&2
  exit 1
fi
CARGO=$(find_cargo) || {
  echo "cargo not found: install a Rust toolchain (https://rustup.rs) and re-run" >&2
  exit 1
}

step "System packages and the Kubernetes components (built once, then cached)"
scripts/deps.sh
COMPONENTS=$(lab/components/build.sh)
echo "  nft, iptables, ip, curl: present; Kubernetes $(sed -n 's/^kubernetes //p' "$COMPONENTS/../VERSIONS") in $COMPONENTS"

step "Build mc and the lab"
# A sudo user's own toolchain builds as that user, so target/ stays theirs.
if [ -n "${SUDO_USER:-}" ] && [ "$(stat -c %U "$REPO")" = "$SUDO_USER" ] && [ "$CARGO" != "$(command -v cargo 2>/dev/null)" ]; then
  sudo -u "$SUDO_USER" -H "$CARGO" build --locked -p mc-lab -p kubectl-mc -p mc-controller -p mc-gateway -p mc-node-agent
else
  "$CARGO" build --locked -p mc-lab -p kubectl-mc -p mc-controller -p mc-gateway -p mc-node-agent
fi
export PATH="$BIN:$COMPONENTS:$PATH"
lab() { mc-lab --lab "$LAB" "$@"; }

step "Bring up the lab '$LAB': clusters east and west, 2 nodes each"
RUST_LOG=${RUST_LOG:-warn} lab up --clusters east,west --nodes-per-cluster 2 --recreate
KUBECONFIG=$(lab kubeconfig)
export KUBECONFIG

step "Install mc in east and west with one shared trust anchor"
IDENTITY="/run/mc-lab/$LAB/mc-identity"
kubectl-mc identity init --out "$IDENTITY"
for cluster in east west; do
  echo "  --- kubectl mc --context $cluster install --cluster-name $cluster --identity-dir $IDENTITY --apply"
  kubectl-mc --context "$cluster" install --cluster-name "$cluster" --identity-dir "$IDENTITY" --apply
done
for cluster in east west; do
  wait_until "mc ready in $cluster (kubectl mc --context $cluster check)" \
    kubectl-mc --context "$cluster" check
done

step "Link the clusters both ways"
echo "  --- kubectl mc --context east link --cluster-name east --apply-to west"
kubectl-mc --context east link --cluster-name east --apply-to west
echo "  --- kubectl mc --context west link --cluster-name west --apply-to east"
kubectl-mc --context west link --cluster-name west --apply-to east

step "Deploy backend in east (3 pods: HTTP 8080, TCP echo 9000)"
echo "  --- kubectl --context east apply -f -"
kubectl --context east apply -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: backend
  labels: {app: backend}
spec:
  replicas: 3
  selector:
    matchLabels: {app: backend}
  template:
    metadata:
      labels: {app: backend}
    spec:
      containers:
      - name: echo
        image: mc-lab/echo
        command: [mc-lab, echo, --http-port, "8080", --tcp-port, "9000"]
        ports:
        - {name: http, containerPort: 8080}
        - {name: tcp, containerPort: 9000}
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: backend
spec:
  selector: {app: backend}
  ports:
  - {name: http, port: 8080}
  - {name: tcp, port: 9000}
EOF
kubectl --context east rollout status deployment/backend --timeout="${TIMEOUT}s"

step "Export backend from east"
echo "  --- kubectl mc --context east export svc/backend"
kubectl-mc --context east export svc/backend

step "Start a client pod in west"
lab pod run west/default/client --labels app=client -- sleep infinity >/dev/null
echo "  west/default/client is running"
wait_until "west's mirror backend-east answers" \
  lab exec west/default/client -- curl -sf --connect-timeout 2 -m 3 http://backend-east:8080/

step "The west client calls http://backend-east:8080/ (answered by east)"
answers=""
pods=0
calls=0
# Six calls, and more (up to 15) until two different pods have answered.
while [ "$calls" -lt 6 ] || { [ "$pods" -lt 2 ] && [ "$calls" -lt 15 ]; }; do
  calls=$((calls + 1))
  echo "  \$ curl http://backend-east:8080/"
  answer=$(lab exec west/default/client -- curl -sS --connect-timeout 2 -m 3 http://backend-east:8080/)
  echo "    $answer"
  case "$answer" in
    *cluster=east*) ;;
    *) echo "the answer did not come from east" >&2; false ;;
  esac
  answers+="$answer"$'\n'
  pods=$(grep -o 'pod=[^ ]*' <<<"$answers" | sort -u | wc -l)
done
echo "  $pods different backend pods in east answered $calls calls"
if [ "$pods" -lt 2 ]; then
  echo "expected the calls to be spread over east's pods" >&2
  false
fi

step "Health of west: kubectl mc check and kubectl mc gateways"
wait_until "west's check passes" kubectl-mc --context west check
echo "  --- kubectl mc --context west check"
kubectl-mc --context west check
echo
echo "  --- kubectl mc --context west gateways"
kubectl-mc --context west gateways

trap - ERR
echo
bold "The demo lab '$LAB' is running. Explore it:"
cat <<EOF
  export KUBECONFIG=$KUBECONFIG PATH=$BIN:$COMPONENTS:\$PATH
                                                           # contexts east and west; kubectl, kubectl-mc, mc-lab
  kubectl --context east get pods -A -o wide               # the real control plane's view
  mc-lab --lab $LAB status                                 # clusters, nodes, pods
  mc-lab --lab $LAB exec west/default/client -- curl http://backend-east:8080/
  kubectl mc --context west gateways                       # kubectl finds the kubectl-mc plugin on PATH
  kubectl-mc --context east unexport svc/backend           # and watch backend-east leave west
  mc-lab --lab $LAB down                                   # remove everything
Logs: /run/mc-lab/$LAB/logs/ (daemons: <cluster>.log, control plane and kube-proxy:
  <cluster>-<component>.log, pods: <cluster>/<namespace>_<pod>.log)
EOF
