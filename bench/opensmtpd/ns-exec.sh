#!/usr/bin/env bash
# ns-exec.sh NSDIR ROOT COMMAND...: run COMMAND (OpenSMTPD's smtpd) with the
# paths compiled into Debian's OpenSMTPD replaced by private directories.
# Run it under `unshare -m --propagation private`: the bind mounts exist
# only in that new mount namespace and vanish with its last process, so
# nothing is written to the real /var/spool, /run, /var/lib or /usr/libexec.
#
#   /var/spool   <- NSDIR/spool      (the queue, /var/spool/smtpd)
#   /run         <- NSDIR/run        (control socket /var/run/smtpd.sock)
#   /var/lib     <- NSDIR/lib        (chroot /var/lib/opensmtpd/empty)
#   /usr/libexec <- NSDIR/libexec    (mail.maildir & co: a link to ROOT's)
#   /etc/resolv.conf <- NSDIR/resolv.conf ("lookup file bind": /etc/hosts
#                  first, as glibc's "hosts: files dns" does for rsmtpd and
#                  Postfix; OpenSMTPD's resolver asks DNS first, and
#                  without a reachable name server every session's reverse
#                  lookup of 127.0.0.1 waits for a timeout)
set -euo pipefail
ns="$1" root="$2"
shift 2
mkdir -p "$ns/spool" "$ns/run" "$ns/lib/opensmtpd/empty" "$ns/libexec"
chmod 755 "$ns" "$ns/spool" "$ns/run" "$ns/lib" "$ns/lib/opensmtpd" "$ns/lib/opensmtpd/empty" "$ns/libexec"
ln -sfn "$root/usr/libexec/opensmtpd" "$ns/libexec/opensmtpd"
printf 'nameserver 127.0.0.1\nlookup file bind\n' >"$ns/resolv.conf"
mount --bind "$ns/spool" /var/spool
mount --bind "$ns/run" /run
mount --bind "$ns/lib" /var/lib
mount --bind "$ns/libexec" /usr/libexec
mount --bind "$ns/resolv.conf" /etc/resolv.conf
exec "$@"
