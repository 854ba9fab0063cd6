#!/usr/bin/env bash
# Installs Debian packages without letting their maintainer scripts start
# services (Debian's prometheus and redis-server would take :9090 and :6379).
# invoke-rc.d asks /usr/sbin/policy-rc.d; exit 101 means "do not start".
# A policy file that already exists is the machine owner's and is left alone.
set -euo pipefail
[ $# -gt 0 ] || exit 0
policy=/usr/sbin/policy-rc.d
ours=""
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	ours=1
fi
cleanup() { [ -z "$ours" ] || rm -f "$policy"; }
trap cleanup EXIT
echo "installing: $*"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
