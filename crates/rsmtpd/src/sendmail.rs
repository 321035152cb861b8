//! `sendmail` / `send-mail` (argv[0] personalities): local submission. The
//! message goes to the running daemon over its control socket, which turns
//! the connection into an SMTP session for the user the kernel says we are
//! (no setuid program, and the submitter cannot claim to be someone else).
//! With the daemon down it goes into the spool's offline folder, from which
//! the daemon submits it again, as its owner, when it starts. The parts
//! without I/O (the command line, the message, the offline file format)
//! are in the rsmtpd-submit crate.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rsmtpd_config::model::Config;
use rsmtpd_smtp_proto::address::{Charset, ForwardPath, ReversePath, XText};
use rsmtpd_smtp_proto::client::Envelope;
use rsmtpd_smtp_proto::command::{Body, MailParams, Notify, NotifyOn, RcptParams, Ret};
use rsmtpd_smtp_proto::server::Recipient;
use rsmtpd_submit::sysexits::{
    EX_CONFIG, EX_DATAERR, EX_IOERR, EX_NOUSER, EX_SOFTWARE, EX_TEMPFAIL, EX_UNAVAILABLE,
};
use rsmtpd_submit::{Invocation, Mode, OfflineSubmission, PrepareOptions, Prepared};

use rsmtpd_control::Request;

/// The environment variable naming the configuration for every
/// personality (`-C` wins for sendmail).
pub const CONFIG_ENV: &str = "RSMTPD_CONFIG";
/// Waiting for any one reply of the daemon.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// The whole submission.
const SESSION_TIMEOUT: Duration = Duration::from_secs(600);
/// The spool folder offline submissions go to.
pub const OFFLINE_DIR: &str = "offline";

pub fn main(args: &[OsString]) -> ExitCode {
    let argv: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let invocation = match rsmtpd_submit::parse_args(&argv) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let code = match invocation.mode {
        Mode::Submit => submit(&invocation),
        // `-C` names the configuration; smtpctl's personalities take -f.
        Mode::Newaliases => {
            return crate::smtpctl::newaliases(&config_args(&invocation));
        }
        Mode::Mailq => return crate::smtpctl::mailq(&config_args(&invocation)),
    };
    match code {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}

/// `-f FILE` for smtpctl's personalities when sendmail had `-C FILE`.
fn config_args(inv: &Invocation) -> Vec<OsString> {
    match &inv.config {
        Some(path) => vec!["-f".into(), path.clone().into_os_string()],
        None => Vec::new(),
    }
}

/// The configuration file of this instance: `-C`, else `$RSMTPD_CONFIG`,
/// else smtpd's default.
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::smtpd::DEFAULT_CONFIG))
}

/// Reads the configuration (to find the socket, the spool and the host
/// name); its diagnostics go to standard error. Tables are not opened: a
/// user submitting mail need not be able to read them.
pub fn load_config(path: &Path) -> Result<Config, u8> {
    let options = rsmtpd_config::ParseOptions {
        table_files: rsmtpd_config::TableFiles::Skip,
        ..rsmtpd_config::ParseOptions::default()
    };
    match rsmtpd_config::parse_file(path, &options) {
        Ok(c) => Ok(c),
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            Err(EX_CONFIG)
        }
    }
}

fn submit(inv: &Invocation) -> Result<(), u8> {
    let config = load_config(&config_path(inv.config.as_deref()))?;
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| nix::unistd::getuid().to_string(), |u| u.name);
    let sender = inv
        .from
        .clone()
        .unwrap_or_else(|| format!("{user}@{}", config.hostname));
    let max = usize::try_from(config.smtp.max_message_size).unwrap_or(usize::MAX);
    let mut input = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if let Err(e) = std::io::stdin().lock().take(limit).read_to_end(&mut input) {
        eprintln!("sendmail: reading the message: {e}");
        return Err(EX_IOERR);
    }
    let now = crate::clock::now();
    let prepared = rsmtpd_submit::prepare(
        &input,
        &PrepareOptions {
            ignore_dots: inv.ignore_dots,
            read_recipients: inv.read_recipients,
            extra_recipients: inv.recipients.clone(),
            sender: sender.clone(),
            full_name: inv.full_name.clone(),
            hostname: config.hostname.clone(),
            date: crate::dsn::rfc5322_date(now),
            message_id: message_id(now, &config.hostname),
            max_size: max,
        },
    )
    .map_err(|e| {
        eprintln!("sendmail: {e}");
        e.exit_code()
    })?;
    let socket = rsmtpd_control::socket_path(&config);
    match UnixStream::connect(&socket) {
        Ok(stream) => online(stream, inv, &prepared),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            offline(&config, inv, prepared)
        }
        Err(e) => {
            eprintln!("sendmail: {}: {e}", socket.display());
            Err(EX_UNAVAILABLE)
        }
    }
}

/// `<time.random@host>`: unique without coordination (128 random bits).
fn message_id(now: u64, hostname: &str) -> String {
    let hex = random_hex(16).unwrap_or_else(|_| format!("{:x}", std::process::id()));
    format!("<{now}.{hex}@{hostname}>")
}

/// Through the daemon: the request frame, then one SMTP transaction.
fn online(mut stream: UnixStream, inv: &Invocation, prepared: &Prepared) -> Result<(), u8> {
    let frame = rsmtpd_ipc::encode_message(&Request::Enqueue, 0).map_err(|_| EX_SOFTWARE)?;
    if let Err(e) = stream.write_all(&frame) {
        eprintln!("sendmail: the daemon: {e}");
        return Err(EX_TEMPFAIL);
    }
    let envelope = envelope(inv, prepared)?;
    let outcomes = rsmtpd_delivery::lmtp::submit(
        stream,
        "localhost",
        &envelope,
        &mut &prepared.message[..],
        IO_TIMEOUT,
        SESSION_TIMEOUT,
    )
    .map_err(|e| {
        eprintln!("sendmail: {e}");
        EX_SOFTWARE
    })?;
    let mut code = None;
    for (rcpt, outcome) in prepared.recipients.iter().zip(&outcomes) {
        use rsmtpd_delivery::lmtp::Outcome;
        match outcome {
            Outcome::Delivered => {
                if inv.verbose {
                    eprintln!("sendmail: {rcpt}: queued");
                }
            }
            Outcome::Permanent(text) => {
                eprintln!("sendmail: {rcpt}: {text}");
                code = Some(EX_NOUSER);
            }
            Outcome::Temporary(text) => {
                eprintln!("sendmail: {rcpt}: {text}");
                code = code.or(Some(EX_TEMPFAIL));
            }
        }
    }
    code.map_or(Ok(()), Err)
}

fn envelope(inv: &Invocation, prepared: &Prepared) -> Result<Envelope, u8> {
    let sender = &prepared.sender;
    let from =
        ReversePath::parse(format!("<{sender}>").as_bytes(), Charset::Utf8).map_err(|e| {
            eprintln!("sendmail: sender <{sender}>: {e}");
            EX_DATAERR
        })?;
    let notify = inv.notify.as_deref().map(|n| {
        if n == "NEVER" {
            Notify::Never
        } else {
            let has = |k: &str| n.split(',').any(|x| x == k);
            NotifyOn::new(has("SUCCESS"), has("FAILURE"), has("DELAY"))
                .map_or(Notify::Never, Notify::On)
        }
    });
    let mut recipients = Vec::with_capacity(prepared.recipients.len());
    for r in &prepared.recipients {
        let path = ForwardPath::parse(format!("<{r}>").as_bytes(), Charset::Utf8).map_err(|e| {
            eprintln!("sendmail: recipient <{r}>: {e}");
            EX_NOUSER
        })?;
        recipients.push(Recipient {
            path,
            params: RcptParams {
                notify,
                orcpt: None,
            },
        });
    }
    let params = MailParams {
        size: Some(prepared.message.len() as u64),
        body: prepared.eight_bit.then_some(Body::EightBitMime),
        ret: inv.ret.map(|r| match r {
            rsmtpd_submit::Ret::Full => Ret::Full,
            rsmtpd_submit::Ret::Hdrs => Ret::Hdrs,
        }),
        envid: inv.envid.as_ref().map(|e| XText::encode(e.as_bytes())),
        ..MailParams::default()
    };
    Envelope::new(from, params, recipients).map_err(|e| {
        eprintln!("sendmail: {e}");
        EX_DATAERR
    })
}

/// The daemon is not running: the submission waits in the offline folder.
fn offline(config: &Config, inv: &Invocation, prepared: Prepared) -> Result<(), u8> {
    let dir = config.queue.path.join(OFFLINE_DIR);
    let file = OfflineSubmission {
        sender: prepared.sender,
        recipients: prepared.recipients,
        notify: inv.notify.clone(),
        ret: inv.ret,
        envid: inv.envid.clone(),
        message: prepared.message,
    };
    let bytes = rsmtpd_submit::offline::encode(&file).map_err(|e| {
        eprintln!("sendmail: {e}");
        EX_DATAERR
    })?;
    write_offline(&dir, &bytes).map_err(|e| {
        eprintln!(
            "sendmail: the daemon is not running, and the offline folder {}: {e}",
            dir.display()
        );
        EX_UNAVAILABLE
    })?;
    if inv.verbose {
        eprintln!("sendmail: the daemon is not running; queued for when it starts");
    }
    Ok(())
}

/// `n` random bytes from the system, in hex.
fn random_hex(n: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; n];
    rsmtpd_queue::Urandom::open()?.fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new file, never an existing one or a link (the folder is writable by
/// everyone), written and synced before it is given its final name.
fn write_offline(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let base = format!(
        "{}.{}.{}",
        crate::clock::now(),
        std::process::id(),
        random_hex(8)?
    );
    let tmp = dir.join(format!(".{base}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dir.join(base))
}

/// `smtpd --offline-submit SOCKET FILE`, started by the parent as the
/// file's owner: submit it, and remove it once every recipient has a final
/// answer. Refused recipients are reported on standard error (the parent
/// logs it).
pub fn offline_main(args: &[OsString]) -> ExitCode {
    let (Some(socket), Some(file)) = (args.first(), args.get(1)) else {
        return ExitCode::from(EX_SOFTWARE);
    };
    match offline_submit(Path::new(socket), Path::new(file)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}

fn offline_submit(socket: &Path, path: &Path) -> Result<(), u8> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            eprintln!("{}: {e}", path.display());
            EX_IOERR
        })?;
    let meta = file.metadata().map_err(|_| EX_IOERR)?;
    // Whoever we run as must own what we read: the parent picked us by the
    // owner it saw, and the file may have been swapped since.
    // One link only: a hard link to someone else's file is not theirs to
    // hand over.
    if !meta.is_file() || meta.uid() != nix::unistd::getuid().as_raw() || meta.nlink() != 1 {
        eprintln!("{}: not a file of ours", path.display());
        return Err(EX_DATAERR);
    }
    let mut bytes = Vec::new();
    let limit = u64::try_from(rsmtpd_submit::MAX_OFFLINE_FILE)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|_| EX_IOERR)?;
    let sub = match rsmtpd_submit::offline::decode(&bytes) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}; removed", path.display());
            let _ = std::fs::remove_file(path);
            return Err(EX_DATAERR);
        }
    };
    let inv = Invocation {
        notify: sub.notify.clone(),
        ret: sub.ret,
        envid: sub.envid.clone(),
        ..Invocation::default()
    };
    let prepared = Prepared {
        sender: sub.sender,
        recipients: sub.recipients,
        eight_bit: sub.message.iter().any(|b| *b >= 0x80),
        message: sub.message,
        added: Vec::new(),
    };
    let stream = UnixStream::connect(socket).map_err(|e| {
        eprintln!("{}: {e}", socket.display());
        EX_TEMPFAIL
    })?;
    match online(stream, &inv, &prepared) {
        // Queued, or refused for good: either way done with the file.
        Ok(()) | Err(EX_NOUSER | EX_DATAERR) => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        // Anything else may work next time: the file stays.
        Err(code) => Err(code),
    }
}
