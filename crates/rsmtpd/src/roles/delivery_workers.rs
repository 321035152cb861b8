//! The delivery children the parent keeps between deliveries.
//!
//! A delivery child (`smtpd --deliver`, roles/deliver.rs) runs as one
//! account, with that account's environment and working directory, and
//! serves requests one after the other over its socket, each with the
//! message's fd. After a delivery it waits here, idle, for the next one to
//! the same account, for up to [`KEEPALIVE`]; then the parent closes its
//! socket and it exits. Starting a process per message (fork, exec, the
//! dynamic loader) was most of the CPU time of local delivery.
//!
//! A child only ever serves the account it was started as: the key is the
//! whole account (name, uid, gid, home). A child whose delivery failed in
//! any way (died, hung, miscounted, broke the protocol) is never reused.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rsmtpd_ipc::Channel;
use rsmtpd_table::Userinfo;

use crate::privsep::Mode;
use crate::roles::deliver::{self, DELIVER_FLAG};

/// How long an idle child waits for another delivery to its account.
pub const KEEPALIVE: Duration = Duration::from_secs(5);

/// Deliveries one child makes before it is replaced: bounds whatever a
/// long-lived process could accumulate.
const MAX_DELIVERIES: u32 = 1000;

/// Idle children kept at most, over all accounts.
const MAX_IDLE: usize = 64;

/// What a child must match to be reused: the account, whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Account {
    username: String,
    uid: u32,
    gid: u32,
    directory: PathBuf,
}

impl Account {
    fn of(user: &Userinfo) -> Account {
        Account {
            username: user.username.clone(),
            uid: user.uid,
            gid: user.gid,
            directory: user.directory.clone(),
        }
    }
}

/// A running delivery child and its socket.
pub struct Worker {
    child: tokio::process::Child,
    pub link: Channel<deliver::Job, deliver::Report>,
    served: u32,
    idle_since: Instant,
    /// Whether it came from the pool (it may have died while idle).
    reused: bool,
}

impl Worker {
    /// Close the socket and reap the child: it exits at the end of its
    /// input; one that does not within a few seconds is killed.
    fn retire(self) {
        let Worker {
            mut child, link, ..
        } = self;
        drop(link);
        tokio::spawn(async move {
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        });
    }

    /// Kill a child that failed its job (hung, or broke the protocol) and
    /// reap it: it is never used again.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The delivery children: how they are started (the same for every
/// account) and those waiting between jobs, by account.
pub struct Workers {
    exe: PathBuf,
    mode: Mode,
    /// Children's stderr goes to the daemon's (foreground, `-d`).
    debug: bool,
    idle: Mutex<HashMap<Account, Vec<Worker>>>,
}

impl Workers {
    pub fn new(exe: PathBuf, mode: Mode, debug: bool) -> Workers {
        Workers {
            exe,
            mode,
            debug,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Send `job` (with `fd`, if any) to a child of `user`'s: an idle one,
    /// else a new one. An idle child may have gone meanwhile: then a new
    /// one gets the job (it cannot have started on it).
    pub async fn hand_over(
        &self,
        user: &Userinfo,
        job: &deliver::Job,
        fd: Option<OwnedFd>,
    ) -> Result<Worker, String> {
        let mut worker = match self.take(user) {
            Some(w) => w,
            None => self.start(user)?,
        };
        // Kept for a second try, where one may be needed.
        let copy = match (&fd, worker.reused) {
            (Some(fd), true) => fd.try_clone().ok(),
            _ => None,
        };
        let Err(e) = worker.link.send(job, fd.into_iter().collect()).await else {
            return Ok(worker);
        };
        let reused = worker.reused;
        worker.kill().await;
        if !reused {
            return Err(format!("delivery process: {e}"));
        }
        let mut worker = self.start(user)?;
        match worker.link.send(job, copy.into_iter().collect()).await {
            Ok(()) => Ok(worker),
            Err(e) => {
                worker.kill().await;
                Err(format!("delivery process: {e}"))
            }
        }
    }

    /// A new child running as `user` (when the daemon is root), with a
    /// clean environment naming the account and its home as working
    /// directory.
    fn start(&self, user: &Userinfo) -> Result<Worker, String> {
        let (mine, theirs) = rsmtpd_ipc::pair().map_err(|e| format!("socketpair: {e}"))?;
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.arg(DELIVER_FLAG)
            .env_clear()
            .env("HOME", &user.directory)
            .env("USER", &user.username)
            .env("LOGNAME", &user.username)
            .env("SHELL", "/bin/sh")
            .env("PATH", "/usr/bin:/bin")
            .current_dir(if user.directory.is_dir() {
                user.directory.as_path()
            } else {
                Path::new("/")
            })
            .stdin(Stdio::null())
            .stdout(Stdio::from(theirs))
            .stderr(if self.debug {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true);
        if self.mode == Mode::Root {
            cmd.uid(user.uid).gid(user.gid);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the delivery: {e}"))?;
        let link = Channel::from_fd(mine).map_err(|e| format!("delivery socket: {e}"))?;
        Ok(Worker {
            child,
            link,
            served: 0,
            idle_since: Instant::now(),
            reused: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Account, Vec<Worker>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently idle child for `user`, if one is still fresh.
    fn take(&self, user: &Userinfo) -> Option<Worker> {
        let key = Account::of(user);
        let mut map = self.lock();
        let list = map.get_mut(&key)?;
        let worker = list.pop();
        if list.is_empty() {
            map.remove(&key);
        }
        let mut worker = worker?;
        if worker.idle_since.elapsed() >= KEEPALIVE {
            drop(map);
            worker.retire();
            return None;
        }
        worker.reused = true;
        Some(worker)
    }

    /// A child that answered its delivery in full waits for the next one,
    /// unless it has served its share or the pool is full.
    pub fn put_back(&self, user: &Userinfo, mut worker: Worker) {
        worker.served += 1;
        if worker.served >= MAX_DELIVERIES {
            worker.retire();
            return;
        }
        worker.idle_since = Instant::now();
        let mut map = self.lock();
        if map.values().map(Vec::len).sum::<usize>() >= MAX_IDLE {
            drop(map);
            worker.retire();
            return;
        }
        map.entry(Account::of(user)).or_default().push(worker);
    }

    /// Let go of the children idle for longer than the keepalive; called
    /// every second by the parent.
    pub fn expire(&self) {
        let mut old = Vec::new();
        {
            let mut map = self.lock();
            for list in map.values_mut() {
                let (stale, fresh): (Vec<Worker>, Vec<Worker>) = list
                    .drain(..)
                    .partition(|w| w.idle_since.elapsed() >= KEEPALIVE);
                *list = fresh;
                old.extend(stale);
            }
            map.retain(|_, list| !list.is_empty());
        }
        for worker in old {
            worker.retire();
        }
    }
}
