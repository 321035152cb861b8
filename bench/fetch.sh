#!/usr/bin/env bash
# Download the Debian packages the benchmark needs (postfix: Postfix itself
# and its load tools smtp-source and smtp-sink; opensmtpd: OpenSMTPD) and
# unpack them under bench/.cache/root. Nothing is installed or started;
# nothing outside bench/.cache is written. Safe to run again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.cache"
debs="$cache/debs"
root="$cache/root"
packages=(postfix opensmtpd)

mkdir -p "$debs" "$root"

for pkg in "${packages[@]}"; do
    if ! compgen -G "$debs/${pkg}_*.deb" >/dev/null; then
        echo "fetch: downloading $pkg" >&2
        # apt-get download writes into the current directory. As root, apt
        # drops to _apt, which may not be able to write here: let it, or
        # accept the (harmless) unsandboxed warning.
        (cd "$debs" && apt-get download "$pkg")
    fi
done

for deb in "$debs"/*.deb; do
    stamp="$root/.unpacked-$(basename "$deb")"
    if [[ ! -e "$stamp" ]]; then
        echo "fetch: unpacking $(basename "$deb")" >&2
        dpkg -x "$deb" "$root"
        touch "$stamp"
    fi
done

# smtp-source/smtp-sink need Postfix's private libraries.
export LD_LIBRARY_PATH="$root/usr/lib/postfix${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for tool in smtp-source smtp-sink; do
    bin="$root/usr/sbin/$tool"
    [[ -x "$bin" ]] || { echo "fetch: $bin missing" >&2; exit 1; }
    # Without arguments they print their usage and exit non-zero; a missing
    # library shows up as the loader's "error while loading shared libraries".
    out="$("$bin" 2>&1 || true)"
    if ! grep -qi 'usage' <<<"$out"; then
        echo "fetch: $tool does not run:" >&2
        echo "$out" >&2
        exit 1
    fi
done
# The servers bench/run.sh compares rsmtpd with. postconf loads Postfix's
# libraries as its daemons do; OpenSMTPD's smtpd -h prints its version.
for bin in "$root/usr/lib/postfix/sbin/master" "$root/usr/sbin/smtpd"; do
    [[ -x "$bin" ]] || { echo "fetch: $bin missing" >&2; exit 1; }
done
if ! "$root/usr/sbin/postconf" -d mail_version >/dev/null 2>&1; then
    echo "fetch: Postfix's postconf does not run:" >&2
    "$root/usr/sbin/postconf" -d mail_version >&2 || true
    exit 1
fi
out="$("$root/usr/sbin/smtpd" -h 2>&1 || true)"
if ! grep -qi 'version' <<<"$out"; then
    echo "fetch: OpenSMTPD's smtpd does not run:" >&2
    echo "$out" >&2
    exit 1
fi
echo "fetch: ok: Postfix, OpenSMTPD, smtp-source and smtp-sink in $root" >&2
