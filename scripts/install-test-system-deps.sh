#!/usr/bin/env bash
# Install the system packages the test suite needs (OpenSSH server for tests/servers), only when missing.
# Idempotent: does nothing (and no `apt-get update`) when everything is present. Debian/Ubuntu, as root.
set -euo pipefail

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-test-system-deps: nothing to install"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-system-deps: missing ${missing[*]}; run as root: sudo $0" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-system-deps: missing ${missing[*]} and apt-get is not available; install them by hand" >&2
    exit 1
fi

echo "install-test-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# sshd refuses to start without its privilege-separation directory.
mkdir -p /run/sshd
