//! The lookup role: rule evaluation and recipient expansion (aliases,
//! virtual tables, .forward) for smtp (each RCPT) and the queue (routing
//! bounces). It reads tables and the user database, so it is not chrooted,
//! but it never touches the spool or the network; users' .forward files
//! are read for it by the parent, as each user.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rsmtpd_config::expand::{Delivery, ExpandError, Expander, ForwardError, RunAs, Step};
use rsmtpd_config::model::{Config, Decision};
use rsmtpd_config::ruleset::{self, MatchContext, Source, Verdict};
use rsmtpd_ipc::Channel;
use rsmtpd_queue::LocalTarget;
use rsmtpd_table::{Table, Userinfo};
use tokio::sync::{mpsc, oneshot};

use crate::links::{
    ChildToParent, ForwardOwner, ForwardResult, FromLookup, ParentToChild, Planned, Role,
    RouteAnswer, RouteQuery, Start, ToLookup,
};
use crate::roles::{ParentLink, Received, RoleError, writer};
use crate::{log_debug, log_info, log_warn};

/// Include files larger than this are refused (aliases(5) `:include:`).
const MAX_INCLUDE_BYTES: u64 = 1024 * 1024;

pub fn run(start: Start, mut parent: ParentLink, mut fds: Received) -> Result<(), RoleError> {
    let tables =
        ruleset::open_tables(&start.config).map_err(|e| RoleError::Setup(e.to_string()))?;
    let smtp = fds.link(Role::Smtp)?;
    let queue = fds.link(Role::Queue)?;
    crate::privsep::apply(start.mode, &super::privileges(Role::Lookup, &start))?;
    super::ready(&mut parent)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        super::ignore_interrupts()?;
        let parent = parent.into_async()?;
        let (parent_tx, parent_rx) = parent.split();
        let (forwards, shutdown) = Forwards::start(parent_tx, parent_rx);
        let smtp: Channel<FromLookup, ToLookup> = Channel::from_fd(smtp)?;
        let queue: Channel<FromLookup, ToLookup> = Channel::from_fd(queue)?;
        let lookup = Lookup {
            config: &start.config,
            tables: &tables,
            forwards: &forwards,
        };
        tokio::select! {
            r = lookup.serve(smtp) => r,
            r = lookup.serve(queue) => r,
            _ = shutdown => Ok(()),
        }
    })
}

/// Requests to the parent for .forward files, matched to their answers.
struct Forwards {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<ForwardResult>>>,
    out: mpsc::UnboundedSender<(ChildToParent, Vec<OwnedFd>)>,
}

impl Forwards {
    /// Also returns what resolves when the parent says Shutdown or goes.
    fn start(
        tx: rsmtpd_ipc::Sender<ChildToParent>,
        mut rx: rsmtpd_ipc::Receiver<ParentToChild>,
    ) -> (std::sync::Arc<Forwards>, oneshot::Receiver<()>) {
        let forwards = std::sync::Arc::new(Forwards {
            next: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            out: writer(tx),
        });
        let (stop_tx, stop) = oneshot::channel();
        let routes = forwards.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(Some((ParentToChild::Forward { id, result }, _))) => {
                        let waiter = routes
                            .pending
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                        if let Some(w) = waiter {
                            let _ = w.send(result);
                        }
                    }
                    Ok(Some((ParentToChild::Shutdown, _))) | Ok(None) | Err(_) => break,
                    Ok(Some(_)) => {}
                }
            }
            let _ = stop_tx.send(());
        });
        (forwards, stop)
    }

    async fn read(&self, user: &Userinfo) -> ForwardResult {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let owner = ForwardOwner {
            username: user.username.clone(),
            uid: user.uid,
            gid: user.gid,
            home: user.directory.clone(),
        };
        if self
            .out
            .send((ChildToParent::ReadForward { id, owner }, Vec::new()))
            .is_err()
        {
            return ForwardResult::Refused("the parent is gone".into());
        }
        rx.await
            .unwrap_or_else(|_| ForwardResult::Refused("the parent is gone".into()))
    }
}

struct Lookup<'a> {
    config: &'a Config,
    tables: &'a [Table],
    forwards: &'a Forwards,
}

impl Lookup<'_> {
    /// Answer one client link until it closes.
    async fn serve(&self, mut link: Channel<FromLookup, ToLookup>) -> Result<(), RoleError> {
        while let Some((msg, _fds)) = link.recv().await? {
            match msg {
                ToLookup::Route { id, query } => {
                    let answer = self.route(&query).await;
                    log_debug!(
                        "lookup: route rcpt={} answer={}",
                        crate::logging::visible(&query.rcpt),
                        crate::logging::visible(&format!("{answer:?}"))
                    );
                    link.send(&FromLookup::Route { id, answer }, Vec::new())
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Which deliveries a recipient gets, or why it is refused.
    async fn route(&self, query: &RouteQuery) -> RouteAnswer {
        let config = self.config;
        let (local_part, domain) = match query.rcpt.rsplit_once('@') {
            Some((l, d)) => (l, d.to_owned()),
            None => (query.rcpt.as_str(), config.hostname.clone()),
        };
        let dest = format!("{local_part}@{domain}");
        let facts = &query.facts;
        let ctx = MatchContext {
            source: match facts.peer {
                None => Source::Local,
                Some(addr) => Source::Network {
                    addr,
                    rdns: facts.rdns.as_deref(),
                },
            },
            tag: facts.tag.as_deref(),
            helo: facts.helo.as_deref(),
            auth_user: facts.auth_user.as_deref(),
            tls: facts.tls,
            sender: &query.sender,
            rcpt: &dest,
            rcpt_domain: &domain,
        };
        let action = match ruleset::evaluate(config, self.tables, &ctx) {
            Err(e) => {
                log_warn!("lookup: rule evaluation failed: {e}");
                return temp_fail("Temporary failure in rule evaluation");
            }
            Ok(Verdict::NoMatch) => {
                return RouteAnswer::Reject {
                    code: 550,
                    status: "5.1.1".into(),
                    text: format!("Invalid recipient: <{dest}>"),
                };
            }
            Ok(Verdict::Matched {
                decision: Decision::Reject,
                ..
            }) => {
                return RouteAnswer::Reject {
                    code: 550,
                    status: "5.7.1".into(),
                    text: "Delivery not authorized".into(),
                };
            }
            Ok(Verdict::Matched {
                decision: Decision::Action(id),
                ..
            }) => id,
        };
        let mut expander = Expander::new(config, self.tables, action, &dest, &ctx);
        // Each round trip to the parent is one step; the engine bounds the
        // number of nodes, so this loop ends.
        let result = loop {
            match expander.run() {
                Step::Done(result) => break result,
                Step::Forward(req) => {
                    let answer = match self.forwards.read(req.user()).await {
                        ForwardResult::Found(text) => {
                            Ok(Some(text.lines().map(str::to_owned).collect()))
                        }
                        ForwardResult::None => Ok(None),
                        ForwardResult::Refused(reason) => Err(ForwardError::Io {
                            path: req.user().directory.join(".forward"),
                            reason,
                        }),
                    };
                    expander = req.answer(answer);
                }
                Step::Include(req) => {
                    let answer = read_include(req.path());
                    expander = req.answer(answer);
                }
            }
        };
        match result {
            Ok(expansion) => {
                for note in &expansion.notes {
                    log_info!(
                        "lookup: expanding {}: {}",
                        crate::logging::visible(&dest),
                        crate::logging::visible(&format!("{note:?}"))
                    );
                }
                let deliveries = expansion
                    .deliveries
                    .into_iter()
                    .map(|d| self.planned(d))
                    .collect();
                RouteAnswer::Accept { deliveries }
            }
            Err(e) if e.is_temporary() => {
                log_warn!("lookup: expanding {}: {e}", crate::logging::visible(&dest));
                temp_fail(&e.reply().text)
            }
            // The client's own address may be named back to it (as
            // OpenSMTPD does); expanded ones never are.
            Err(ExpandError::UnknownRecipient { address }) if address == dest => {
                RouteAnswer::Reject {
                    code: 550,
                    status: "5.1.1".into(),
                    text: format!("Invalid recipient: <{dest}>"),
                }
            }
            Err(e) => {
                let reply = e.reply();
                RouteAnswer::Reject {
                    code: reply.code,
                    status: reply.status,
                    text: reply.text,
                }
            }
        }
    }

    fn planned(&self, delivery: Delivery) -> Planned {
        let name = |id: rsmtpd_config::model::ActionId| {
            self.config
                .actions
                .get(id.0)
                .map(|a| a.name.clone())
                .unwrap_or_default()
        };
        let run_as = |r: RunAs| match r {
            RunAs::User(u) => Some(u.username),
            RunAs::Unprivileged => None,
        };
        match delivery {
            Delivery::Local { action, dest, user } => Planned {
                action: name(action),
                relay: false,
                dest,
                user: Some(user.username),
                target: None,
            },
            Delivery::File {
                action,
                path,
                run_as: who,
            } => Planned {
                action: name(action),
                relay: false,
                dest: path.display().to_string(),
                user: run_as(who),
                target: Some(LocalTarget::File(path.display().to_string())),
            },
            Delivery::Command {
                action,
                command,
                run_as: who,
            } => Planned {
                action: name(action),
                relay: false,
                dest: command.clone(),
                user: run_as(who),
                target: Some(LocalTarget::Command(command)),
            },
            Delivery::Relay { action, dest } => Planned {
                action: name(action),
                relay: true,
                dest,
                user: None,
                target: None,
            },
        }
    }
}

fn temp_fail(text: &str) -> RouteAnswer {
    RouteAnswer::TempFail {
        text: text.to_owned(),
    }
}

/// An `:include:` file, read as this process (`_smtpd` as root): the admin
/// names it, so it only has to be readable and small.
fn read_include(path: &std::path::Path) -> Result<Vec<String>, ForwardError> {
    use std::io::Read;
    let io = |reason: String| ForwardError::Io {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| io(e.to_string()))?;
    let meta = file.metadata().map_err(|e| io(e.to_string()))?;
    if !meta.is_file() {
        return Err(ForwardError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    let mut text = String::new();
    let n = file
        .take(MAX_INCLUDE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| io(e.to_string()))?;
    if n as u64 > MAX_INCLUDE_BYTES {
        return Err(ForwardError::TooLarge {
            path: path.to_path_buf(),
            max: MAX_INCLUDE_BYTES as usize,
        });
    }
    Ok(text.lines().map(str::to_owned).collect())
}
