//! Who a local recipient is: the system (or userbase) account a local
//! delivery runs as. The lookup role asks at RCPT time (does the user
//! exist?), the parent at delivery time (uid, gid, home), with the same
//! rules.

use rsmtpd_config::model::{Config, LocalDispatcher};
use rsmtpd_table::{Service, Table, TableError, Userinfo, Value};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("no such user {0:?}")]
    Unknown(String),
    #[error("user lookup failed: {0}")]
    Table(#[from] TableError),
    #[error("the userbase table is not open")]
    NoTable,
}

/// The local part a delivery is for: lower-cased, without the sub-address
/// (`bob+lists` is `bob` with the default delimiter).
pub fn user_part(local_part: &str, delim: char) -> String {
    let base = local_part.split(delim).next().unwrap_or(local_part);
    base.to_ascii_lowercase()
}

/// The account for recipient `local_part` under `action`.
pub fn resolve(
    config: &Config,
    tables: &[Table],
    action: &LocalDispatcher,
    local_part: &str,
) -> Result<Userinfo, UserError> {
    // `user` names the account outright; the userbase does not apply to it.
    if let Some(name) = &action.user {
        return getpwnam(name);
    }
    let key = user_part(local_part, config.smtp.sub_addr_delim);
    let table = match action.userbase {
        Some(id) => tables.get(id.0).ok_or(UserError::NoTable)?,
        None => {
            let id = config
                .tables
                .iter()
                .position(|t| t.name == "<getpwnam>")
                .ok_or(UserError::NoTable)?;
            tables.get(id).ok_or(UserError::NoTable)?
        }
    };
    match table.lookup(Service::Userinfo, &key)? {
        Some(Value::Userinfo(info)) => Ok(info),
        _ => Err(UserError::Unknown(key)),
    }
}

fn getpwnam(name: &str) -> Result<Userinfo, UserError> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(Userinfo {
            username: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            directory: u.dir,
        }),
        _ => Err(UserError::Unknown(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_address_and_case() {
        assert_eq!(user_part("Bob+Lists", '+'), "bob");
        assert_eq!(user_part("bob-x", '-'), "bob");
        assert_eq!(user_part("alice", '+'), "alice");
    }
}
