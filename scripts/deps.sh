#!/usr/bin/env bash
# Installs what the lab and the tests need on Debian/Ubuntu, as root: the
# system packages (nftables and iptables for kube-proxy's two modes,
# iproute2, curl, procps) and the real Kubernetes components, built from
# their Go modules by lab/components/build.sh (cached: only the first run
# on a machine builds them).
set -euo pipefail
need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
command -v sysctl >/dev/null 2>&1 || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
"$(dirname "$0")/../lab/components/build.sh" >/dev/null
