#!/usr/bin/env bash
# Installs what rsmtpd's tests need on a fresh Debian machine with the Rust
# toolchain: Debian packages, and (as root) the system users the daemon
# drops to. Safe to run again. Called by the README's set-up and by .ci/run.
set -euo pipefail

packages=(swaks libnet-ssleay-perl openssl python3 strace dovecot-lmtpd)

need=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done

if [ "$(id -u)" -ne 0 ]; then
    if [ ${#need[@]} -gt 0 ]; then
        echo "setup: not root; install these first: sudo apt-get install ${need[*]}" >&2
    fi
    echo "setup: not root; tests that need root (privilege drops) will be skipped" >&2
    exit 0
fi

if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Packages with a service (dovecot) must not start it: the tests run
    # their own instances on private sockets.
    policy=/usr/sbin/policy-rc.d
    created_policy=no
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        created_policy=yes
    fi
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [ "$created_policy" = yes ]; then
        rm -f "$policy"
    fi
fi

# The unprivileged users of the process split (docs/architecture.md):
# _smtpd runs the network-facing roles, _smtpq owns the spool.
for u in _smtpd _smtpq; do
    if ! getent passwd "$u" >/dev/null; then
        useradd --system --no-create-home --home-dir /var/empty \
            --shell /usr/sbin/nologin "$u"
    fi
done
# Recipients for the tests that check deliveries as another user.
for u in rsmtpdtest1 rsmtpdtest2; do
    if ! getent passwd "$u" >/dev/null; then
        useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$u"
    fi
done
# A system account with a known password, for AUTH against system accounts
# (`listen ... auth` without a table: tests/tls_auth.rs, example 03). Only
# where asked for (CI sets RSMTPD_TEST_ACCOUNTS=yes): a login with a
# published password has no place on a machine that just runs the tests.
# SHA-512 crypt, as the daemon does not read yescrypt.
if [ "${RSMTPD_TEST_ACCOUNTS:-}" = yes ]; then
    if ! getent passwd rsmtpdauth >/dev/null; then
        useradd --system --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin rsmtpdauth
    fi
    echo 'rsmtpdauth:rsmtpd-Auth-Test-4711' | chpasswd -c SHA512
fi
# The chroot of the confined roles.
install -d -o root -g root -m 0755 /var/empty
echo "setup: ok"
