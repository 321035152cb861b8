//! The lookup role: rule evaluation and user lookups for smtp (each RCPT)
//! and the queue (routing bounces). It reads tables and the user database,
//! so it is not chrooted, but it never touches the spool or the network.

use rsmtpd_config::model::{Config, Decision, Dispatcher};
use rsmtpd_config::ruleset::{self, MatchContext, Source, Verdict};
use rsmtpd_ipc::Channel;
use rsmtpd_table::Table;

use crate::links::{FromLookup, Role, RouteAnswer, RouteQuery, Start, ToLookup};
use crate::local_user;
use crate::roles::{ParentLink, Received, RoleError};
use crate::{log_debug, log_warn};

pub fn run(start: Start, mut parent: ParentLink, mut fds: Received) -> Result<(), RoleError> {
    let tables =
        ruleset::open_tables(&start.config).map_err(|e| RoleError::Setup(e.to_string()))?;
    let smtp = fds.link(Role::Smtp)?;
    let queue = fds.link(Role::Queue)?;
    crate::privsep::apply(start.mode, &super::privileges(Role::Lookup, &start))?;
    super::ready(&mut parent)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let parent = parent.into_async()?;
        let smtp: Channel<FromLookup, ToLookup> = Channel::from_fd(smtp)?;
        let queue: Channel<FromLookup, ToLookup> = Channel::from_fd(queue)?;
        let config = &start.config;
        let tables = &tables;
        tokio::select! {
            r = serve(config, tables, smtp) => r,
            r = serve(config, tables, queue) => r,
            r = super::wait_for_shutdown(parent) => r,
        }
    })
}

/// Answer one client link until it closes.
async fn serve(
    config: &Config,
    tables: &[Table],
    mut link: Channel<FromLookup, ToLookup>,
) -> Result<(), RoleError> {
    while let Some((msg, _fds)) = link.recv().await? {
        match msg {
            ToLookup::Route { id, query } => {
                let answer = route(config, tables, &query);
                log_debug!(
                    "lookup: route rcpt={} answer={answer:?}",
                    crate::logging::visible(&query.rcpt)
                );
                link.send(&FromLookup::Route { id, answer }, Vec::new())
                    .await?;
            }
        }
    }
    Ok(())
}

/// Which action a recipient gets, and whether it is deliverable.
pub fn route(config: &Config, tables: &[Table], query: &RouteQuery) -> RouteAnswer {
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
    let verdict = match ruleset::evaluate(config, tables, &ctx) {
        Ok(v) => v,
        Err(e) => {
            log_warn!("lookup: rule evaluation failed: {e}");
            return RouteAnswer::TempFail {
                text: "Temporary failure in rule evaluation".into(),
            };
        }
    };
    let action = match verdict {
        Verdict::NoMatch => return invalid_recipient(&dest),
        Verdict::Matched {
            decision: Decision::Reject,
            ..
        } => {
            return RouteAnswer::Reject {
                code: 550,
                status: "5.7.1".into(),
                text: "Delivery not authorized".into(),
            };
        }
        Verdict::Matched {
            decision: Decision::Action(id),
            ..
        } => match config.actions.get(id.0) {
            Some(a) => a,
            None => {
                return RouteAnswer::TempFail {
                    text: "Temporary failure: unknown action".into(),
                };
            }
        },
    };
    match &action.dispatcher {
        Dispatcher::Relay(_) => RouteAnswer::Accept {
            action: action.name.clone(),
            relay: true,
            dest,
        },
        Dispatcher::Local(local) => match local_user::resolve(config, tables, local, local_part) {
            Ok(_) => RouteAnswer::Accept {
                action: action.name.clone(),
                relay: false,
                dest,
            },
            Err(local_user::UserError::Unknown(_)) => invalid_recipient(&dest),
            Err(e) => {
                log_warn!("lookup: {e}");
                RouteAnswer::TempFail {
                    text: "Temporary failure in user lookup".into(),
                }
            }
        },
    }
}

fn invalid_recipient(dest: &str) -> RouteAnswer {
    RouteAnswer::Reject {
        code: 550,
        status: "5.1.1".into(),
        text: format!("Invalid recipient: <{dest}>"),
    }
}
