//! The lookup role: rule evaluation and recipient expansion (aliases,
//! virtual tables, .forward) for smtp (each RCPT) and the queue (routing
//! bounces). It reads tables and the user database, so it is not chrooted,
//! but it never touches the spool or the network; users' .forward files
//! are read for it by the parent, as each user. It also checks AUTH
//! passwords against credentials tables (system accounts go to the parent,
//! which alone can read the shadow file) and `senders` tables.

use std::sync::Mutex;

use rsmtpd_config::expand::{Delivery, ExpandError, Expander, ForwardError, RunAs, Step};
use rsmtpd_config::model::{Config, Decision};
use rsmtpd_config::ruleset::{self, MatchContext, Source, Verdict};
use rsmtpd_ipc::Channel;
use rsmtpd_queue::LocalTarget;
use rsmtpd_table::{Table, Userinfo};
use tokio::sync::oneshot;

use crate::links::{
    AuthVerdict, ChildToParent, ForwardOwner, ForwardResult, FromLookup, ParentToChild, Planned,
    Role, RouteAnswer, RouteQuery, Secret, Start, ToLookup,
};
use crate::roles::{ParentLink, Received, RoleError};
use crate::{log_debug, log_info, log_warn};

/// Include files larger than this are refused (aliases(5) `:include:`).
const MAX_INCLUDE_BYTES: u64 = 1024 * 1024;

pub fn run(start: Start, mut parent: ParentLink, mut fds: Received) -> Result<(), RoleError> {
    let tables =
        ruleset::open_tables(&start.config).map_err(|e| RoleError::Setup(e.to_string()))?;
    let smtp = fds.link(Role::Smtp)?;
    let queue = fds.link(Role::Queue)?;
    let control = fds.link(Role::Control)?;
    crate::privsep::apply(start.mode, &super::privileges(Role::Lookup, &start))?;
    super::ready(&mut parent)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        super::ignore_interrupts()?;
        let parent = parent.into_async()?;
        let (parent_tx, parent_rx) = parent.split();
        let state = std::sync::Arc::new(State {
            current: Mutex::new(std::sync::Arc::new(Current {
                config: start.config,
                tables: tables.into_iter().map(std::sync::Arc::new).collect(),
            })),
        });
        let (parent, shutdown) = ParentRequests::start(parent_tx, parent_rx, state.clone());
        let smtp: Channel<FromLookup, ToLookup> = Channel::from_fd(smtp)?;
        let queue: Channel<FromLookup, ToLookup> = Channel::from_fd(queue)?;
        let control: Channel<FromLookup, ToLookup> = Channel::from_fd(control)?;
        let lookup = Lookup {
            state: &state,
            parent: &parent,
        };
        tokio::select! {
            r = lookup.serve(smtp) => r,
            r = lookup.serve(queue) => r,
            r = lookup.serve(control) => r,
            _ = shutdown => Ok(()),
        }
    })
}

/// Requests to the parent (.forward files, system passwords), matched to
/// their answers by id.
struct ParentRequests {
    client: std::sync::Arc<super::rpc::Client<ChildToParent, ParentToChild>>,
}

impl ParentRequests {
    /// Also returns what resolves when the parent says Shutdown or goes.
    /// Also applies reloads to `state` (the parent sends them here).
    fn start(
        tx: rsmtpd_ipc::Sender<ChildToParent>,
        mut rx: rsmtpd_ipc::Receiver<ParentToChild>,
        state: std::sync::Arc<State>,
    ) -> (std::sync::Arc<ParentRequests>, oneshot::Receiver<()>) {
        let client = super::rpc::Client::new(tx);
        let routes = client.pending();
        let (stop_tx, stop) = oneshot::channel();
        tokio::spawn(async move {
            loop {
                let answer = match rx.recv().await {
                    Ok(Some((ParentToChild::Shutdown, _))) | Ok(None) | Err(_) => break,
                    Ok(Some((ParentToChild::Logging(v), _))) => {
                        crate::logging::apply(v);
                        continue;
                    }
                    Ok(Some((ParentToChild::Reload(config), _))) => {
                        // Opening tables reads files: off the event loop.
                        let state = state.clone();
                        let _ = tokio::task::spawn_blocking(move || state.reload(*config)).await;
                        continue;
                    }
                    Ok(Some((answer, _))) => answer,
                };
                let id = match &answer {
                    ParentToChild::Forward { id, .. } | ParentToChild::Password { id, .. } => *id,
                    _ => continue,
                };
                routes.answer(id, answer, Vec::new());
            }
            routes.close();
            let _ = stop_tx.send(());
        });
        (std::sync::Arc::new(ParentRequests { client }), stop)
    }

    /// One request; `None` if the parent is gone.
    async fn call(&self, make: impl FnOnce(u64) -> ChildToParent) -> Option<ParentToChild> {
        self.client.call(make).await.map(|(answer, _)| answer)
    }

    async fn read_forward(&self, user: &Userinfo) -> ForwardResult {
        let owner = ForwardOwner {
            username: user.username.clone(),
            uid: user.uid,
            gid: user.gid,
            home: user.directory.clone(),
        };
        match self
            .call(|id| ChildToParent::ReadForward { id, owner })
            .await
        {
            Some(ParentToChild::Forward { result, .. }) => result,
            _ => ForwardResult::Refused("the parent is gone".into()),
        }
    }

    async fn check_password(&self, user: String, password: Secret) -> AuthVerdict {
        match self
            .call(|id| ChildToParent::CheckPassword { id, user, password })
            .await
        {
            Some(ParentToChild::Password { verdict, .. }) => verdict,
            _ => AuthVerdict::Unavailable("the parent is gone".into()),
        }
    }
}

/// The configuration and its open tables. A request works on the set it
/// started with; a reload or `smtpctl update table` swaps in a new set (the
/// old one lives on until the requests using it are done), so no lock is
/// held across an await.
struct State {
    current: Mutex<std::sync::Arc<Current>>,
}

struct Current {
    config: Config,
    tables: Vec<std::sync::Arc<Table>>,
}

impl State {
    fn snapshot(&self) -> std::sync::Arc<Current> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads table `name` from its file (`smtpctl update table`).
    fn update(&self, name: &str) -> Result<(), String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let config = &current.config;
        let index = config
            .tables
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| format!("no table named {}", crate::logging::visible(name)))?;
        let decl = &config.tables.get(index).ok_or("no such table")?.decl;
        let table = Table::open(decl).map_err(|e| e.to_string())?;
        let mut tables = current.tables.clone();
        if let Some(slot) = tables.get_mut(index) {
            *slot = std::sync::Arc::new(table);
        }
        *current = std::sync::Arc::new(Current {
            config: config.clone(),
            tables,
        });
        Ok(())
    }

    /// A new configuration, with every table opened again (their files
    /// may have changed too). On failure the running one stays.
    fn reload(&self, config: Config) {
        match ruleset::open_tables(&config) {
            Ok(tables) => {
                let next = Current {
                    config,
                    tables: tables.into_iter().map(std::sync::Arc::new).collect(),
                };
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(next);
                log_info!("lookup: configuration reloaded");
            }
            Err(e) => log_warn!(
                "lookup: reload failed, keeping the running configuration: {}",
                crate::logging::visible(&e.to_string())
            ),
        }
    }
}

struct Lookup<'a> {
    state: &'a State,
    parent: &'a ParentRequests,
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
                ToLookup::Authenticate {
                    id,
                    table,
                    user,
                    password,
                } => {
                    let verdict = self.authenticate(table, user, password).await;
                    link.send(&FromLookup::Authenticated { id, verdict }, Vec::new())
                        .await?;
                }
                ToLookup::UpdateTable { id, name } => {
                    let result = self.state.update(&name);
                    match &result {
                        Ok(()) => {
                            log_info!("lookup: table {} updated", crate::logging::visible(&name))
                        }
                        Err(e) => log_warn!(
                            "lookup: table {}: {}",
                            crate::logging::visible(&name),
                            crate::logging::visible(e)
                        ),
                    }
                    link.send(&FromLookup::TableUpdated { id, result }, Vec::new())
                        .await?;
                }
                ToLookup::Sender {
                    id,
                    table,
                    user,
                    sender,
                } => {
                    let allowed = self.sender_allowed(table, &user, &sender);
                    link.send(&FromLookup::Sender { id, allowed }, Vec::new())
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// AUTH: a credentials table holds crypt(3) hashes by user name; with
    /// no table the parent checks the system account. Hashing runs on a
    /// blocking thread: a bcrypt check takes tens of milliseconds.
    async fn authenticate(
        &self,
        table: Option<rsmtpd_config::model::TableId>,
        user: String,
        password: Secret,
    ) -> AuthVerdict {
        let Some(table) = table else {
            return self.parent.check_password(user, password).await;
        };
        let current = self.state.snapshot();
        let Some(table) = current.tables.get(table.0) else {
            return AuthVerdict::Unavailable("credentials table missing".into());
        };
        let stored = match table.lookup(rsmtpd_table::Service::String, &user) {
            Ok(Some(rsmtpd_table::Value::Raw(hash))) => hash,
            Ok(_) => return AuthVerdict::Rejected,
            Err(e) => return AuthVerdict::Unavailable(format!("credentials table: {e}")),
        };
        let checked = tokio::task::spawn_blocking(move || {
            rsmtpd_auth::check_table_entry(&stored, &password.0)
        })
        .await;
        match checked {
            Ok(Ok(true)) => AuthVerdict::Accepted,
            Ok(Ok(false)) => AuthVerdict::Rejected,
            Ok(Err(e)) => AuthVerdict::Unavailable(format!(
                "credentials of {}: {e}",
                crate::logging::visible(&user)
            )),
            Err(_) => AuthVerdict::Unavailable("password check failed".into()),
        }
    }

    /// `senders <table>`: the addresses listed for the user (full
    /// addresses, `@domain` or a local part) are the only MAIL FROM it
    /// may use.
    fn sender_allowed(
        &self,
        table: rsmtpd_config::model::TableId,
        user: &str,
        sender: &str,
    ) -> Option<bool> {
        let current = self.state.snapshot();
        let table = current.tables.get(table.0)?;
        match table.lookup(rsmtpd_table::Service::Mailaddrmap, user) {
            Ok(Some(rsmtpd_table::Value::Mailaddrmap(list))) => Some(list.iter().any(|entry| {
                rsmtpd_table::mailaddr_match(
                    sender,
                    &entry.to_string(),
                    current.config.smtp.sub_addr_delim,
                )
            })),
            Ok(_) => Some(false),
            Err(e) => {
                log_warn!("lookup: senders table: {e}");
                None
            }
        }
    }

    /// Which deliveries a recipient gets, or why it is refused.
    async fn route(&self, query: &RouteQuery) -> RouteAnswer {
        // The configuration this whole lookup uses, even if a reload
        // comes while it waits for the parent.
        let current = self.state.snapshot();
        let config = &current.config;
        let tables = &current.tables;
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
        let action = match ruleset::evaluate(config, tables.as_slice(), &ctx) {
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
        let mut expander = Expander::new(config, tables.as_slice(), action, &dest, &ctx);
        // Each round trip to the parent is one step; the engine bounds the
        // number of nodes, so this loop ends.
        let result = loop {
            match expander.run() {
                Step::Done(result) => break result,
                Step::Forward(req) => {
                    let answer = match self.parent.read_forward(req.user()).await {
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
                    .map(|d| planned(config, d))
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
}

/// The delivery a recipient's expansion produced, as the queue records it.
fn planned(config: &Config, delivery: Delivery) -> Planned {
    let name = |id: rsmtpd_config::model::ActionId| {
        config
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
