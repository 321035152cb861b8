//! One binary, personalities chosen by the name it runs as (as OpenSMTPD's
//! smtpctl is also sendmail, mailq, newaliases and makemap): `smtpd`, and
//! `makemap`, `smtpctl` and `sendmail` (`send-mail`) through links of
//! those names. The daemon re-executes it with
//! `--role NAME` for each child process and `--deliver` for each local
//! delivery.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

mod clock;
mod conn;
mod dsn;
mod getopt;
mod links;
mod logging;
mod makemap;
mod privsep;
mod quickstart;
mod roles;
mod sendmail;
mod smtpctl;
mod smtpd;
mod tls;
mod tuning;

fn main() -> ExitCode {
    close_inherited_fds();
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let args: Vec<OsString> = argv.collect();
    match args.first().and_then(|a| a.to_str()) {
        Some(roles::ROLE_FLAG) => {
            let name = args.get(1).and_then(|a| a.to_str()).unwrap_or_default();
            return roles::child_main(name);
        }
        Some(roles::deliver::DELIVER_FLAG) => return roles::deliver::main(),
        Some(roles::offline::OFFLINE_FLAG) => {
            return sendmail::offline_main(args.get(1..).unwrap_or_default());
        }
        _ => {}
    }
    let name = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.as_str() {
        "makemap" => makemap::main(&args),
        "smtpctl" => smtpctl::main(&args),
        "mailq" => smtpctl::mailq(&args),
        "newaliases" => smtpctl::newaliases(&args),
        "sendmail" | "send-mail" => sendmail::main(&args),
        _ => smtpd::main(&args),
    }
}

/// Close every descriptor above stderr that whoever started us left open:
/// none of them is ours, and none may reach a delivery program or a child
/// role (std marks only the descriptors it opens itself close-on-exec).
fn close_inherited_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // The listing's own descriptor is already closed: EBADF is fine.
        let _ = nix::unistd::close(fd);
    }
}
