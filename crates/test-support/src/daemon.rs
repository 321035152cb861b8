//! A real `smtpd` for end-to-end tests: a temporary directory with a config,
//! a spool and a Maildir, a free loopback port, the daemon started with
//! `-d` and its log collected; stopped (SIGTERM, then SIGKILL) on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the daemon logs once it has started.
const READY: &str = "smtpd: ready";

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A running daemon.
pub struct Daemon {
    pub dir: PathBuf,
    pub port: u16,
    pub config: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

/// What a test puts in the config. `{port}`, `{dir}`, `{spool}` and
/// `{maildir}` in `body` are replaced. `env` is added to the daemon's
/// environment (the RSMTPD_* timing knobs of docs/operations.md).
pub struct Setup<'a> {
    pub name: &'a str,
    pub body: &'a str,
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
}

/// The usual test config: listen on 127.0.0.1:{port}, deliver every
/// recipient to `{dir}/Maildir` as the user running the tests.
pub fn default_body() -> String {
    let user = current_user();
    format!(
        "queue path \"{{spool}}\"\nlisten on 127.0.0.1 port {{port}}\n\
         action \"local\" maildir \"{{maildir}}\" user \"{user}\"\n\
         match from any for any action \"local\"\n"
    )
}

impl Daemon {
    /// The usual test daemon: listen on 127.0.0.1:{port}, deliver every
    /// recipient to `{dir}/Maildir` as the user running the tests.
    pub fn start_default(binary: &Path, name: &str) -> Daemon {
        let body = default_body();
        Daemon::start(
            binary,
            &Setup {
                name,
                body: &body,
                args: &[],
                env: &[],
            },
        )
    }

    pub fn start(binary: &Path, setup: &Setup<'_>) -> Daemon {
        let dir = crate::temp_dir(&format!("daemon-{}", setup.name));
        // The daemon's users must be able to reach the spool and Maildir.
        set_mode(&dir, 0o755);
        let port = free_port();
        let config = dir.join("smtpd.conf");
        let text = setup
            .body
            .replace("{port}", &port.to_string())
            .replace("{dir}", &dir.display().to_string())
            .replace("{spool}", &dir.join("spool").display().to_string())
            .replace("{maildir}", &dir.join("Maildir").display().to_string());
        std::fs::write(&config, text).expect("write config");
        let mut d = Daemon {
            dir,
            port,
            config,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            binary: binary.to_path_buf(),
            env: setup
                .env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        d.spawn(setup.args);
        d
    }

    /// Start (again) with the same config and spool, and wait until this
    /// run says it is ready. The daemon gets its own process group, so
    /// [`Daemon::kill_all`] can kill every process of it at once.
    pub fn spawn(&mut self, extra: &[&str]) {
        use std::os::unix::process::CommandExt;
        let ready_before = self.log().matches(READY).count();
        let mut child = Command::new(&self.binary)
            .arg("-d")
            .arg("-v")
            .args(extra)
            .arg("-f")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start smtpd");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.log().matches(READY).count() <= ready_before {
            if let Some(status) = self.exited() {
                panic!(
                    "smtpd exited ({status}) during start-up; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "smtpd not ready after 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.join("Maildir")
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool")
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The `smtpctl` personality of the daemon's binary (a link named
    /// so in the daemon's directory).
    pub fn smtpctl_path(&self) -> PathBuf {
        let link = self.dir.join("smtpctl");
        if !link.exists() {
            let _ = std::os::unix::fs::symlink(&self.binary, &link);
        }
        link
    }

    /// Run smtpctl against this daemon (its config through RSMTPD_CONFIG),
    /// as `user` when given: exit code, stdout, stderr.
    pub fn smtpctl(&self, args: &[&str], user: Option<&str>) -> (i32, String, String) {
        let out = command_as(&self.smtpctl_path(), user)
            .args(args)
            .env("RSMTPD_CONFIG", &self.config)
            .output()
            .unwrap_or_else(|e| panic!("smtpctl: {e}"));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Wait until the log contains `needle`; panics with the log if not.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "smtpd exited ({status}) waiting for {needle:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "timed out waiting for {needle:?} in the log:\n{}",
            self.log()
        );
    }

    fn exited(&self) -> Option<String> {
        // try_wait needs &mut; peek through /proc instead.
        let pid = self.pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit(')').next()?.split_whitespace().next()?;
        (state == "Z").then(|| "zombie".to_string())
    }

    /// Files in Maildir/new, sorted.
    pub fn delivered(&self) -> Vec<PathBuf> {
        list(&self.maildir().join("new"))
    }

    /// Wait until Maildir/new holds at least `n` files.
    pub fn wait_for_delivered(&self, n: usize, timeout: Duration) -> Vec<PathBuf> {
        let deadline = Instant::now() + timeout;
        loop {
            let files = self.delivered();
            if files.len() >= n || Instant::now() >= deadline {
                return files;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the whole daemon at once: its process group holds the
    /// parent, every child role and any delivery in progress.
    pub fn kill_all(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            // Wait (bounded) until no member of the group runs any more
            // (orphans may linger as zombies where nothing reaps them).
            let deadline = Instant::now() + Duration::from_secs(5);
            while group_alive(group.as_raw()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The pids of the daemon's child processes.
    pub fn children(&self) -> Vec<u32> {
        self.pid().map(descendants).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill_all();
        }
    }
}

/// Whether a process of group `pgid` is alive (not a zombie).
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // After the command name: state, ppid, pgrp, ...
        let mut fields = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

/// Every process whose parent chain leads to `pid`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            break;
        };
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(p) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// The name of the user running the tests.
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |u| u.name)
}

/// A command for `program`, run as `user` when given (through setpriv,
/// so the caller must be root), else as the caller.
pub fn command_as(program: &Path, user: Option<&str>) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--init-groups",
                "--",
            ])
            .arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A minimal SMTP client for byte-exact tests: send raw bytes, read
/// replies. Plaintext, or TLS after [`Client::starttls`] / [`Client::connect_tls`].
pub struct Client<S: Read + Write = TcpStream> {
    stream: S,
    buf: Vec<u8>,
}

/// A client's TLS stream.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut c = Client {
            stream,
            buf: Vec::new(),
        };
        let greeting = c.reply();
        assert!(greeting.starts_with("220 "), "greeting: {greeting:?}");
        c
    }

    /// Implicit TLS (smtps): the handshake, then the greeting.
    pub fn connect_tls(
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Client<TlsStream> {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut c = Client {
            stream: tls_stream(stream, config, server_name),
            buf: Vec::new(),
        };
        let greeting = c.reply();
        assert!(greeting.starts_with("220 "), "greeting: {greeting:?}");
        c
    }

    /// STARTTLS (the server must answer 220), then the handshake. Bytes the
    /// server sent after its 220 would be a bug: they are asserted absent.
    pub fn starttls(
        mut self,
        config: std::sync::Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Client<TlsStream> {
        let reply = self.cmd("STARTTLS");
        assert!(reply.starts_with("220 "), "STARTTLS: {reply:?}");
        assert!(self.buf.is_empty(), "plaintext after 220: {:?}", self.buf);
        let mut tls = tls_stream(self.stream, config, server_name);
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
        Client {
            stream: tls,
            buf: Vec::new(),
        }
    }
}

/// A TLS client stream over `stream`, not yet shaken hands (rustls does
/// the handshake at the first read or write).
pub fn tls_stream(
    stream: TcpStream,
    config: std::sync::Arc<rustls::ClientConfig>,
    server_name: &str,
) -> TlsStream {
    let name =
        rustls::pki_types::ServerName::try_from(server_name.to_owned()).expect("server name");
    let conn = rustls::ClientConnection::new(config, name).expect("client connection");
    rustls::StreamOwned::new(conn, stream)
}

impl<S: Read + Write> Client<S> {
    /// The stream itself (e.g. the TLS state).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.stream.flush().expect("flush");
    }

    /// One whole reply (all its lines), CRLFs included.
    pub fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let line = self.line();
            out.push_str(&line);
            if line.len() < 4 || line.as_bytes().get(3) != Some(&b'-') {
                return out;
            }
        }
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    let rest: Vec<u8> = self.buf.drain(..).collect();
                    return String::from_utf8_lossy(&rest).into_owned();
                }
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                // A TLS peer that closes without close_notify reads as EOF.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    let rest: Vec<u8> = self.buf.drain(..).collect();
                    return String::from_utf8_lossy(&rest).into_owned();
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Send a command line and return the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Whether the server closed the connection (reads EOF).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Err(e) => {
                e.kind() == std::io::ErrorKind::UnexpectedEof
                    || e.kind() == std::io::ErrorKind::ConnectionReset
            }
            Ok(_) => false,
        }
    }
}
