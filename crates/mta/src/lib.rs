//! rsmtpd-mta: outbound mail. For now the routing half: where a relayed
//! message goes ([`route`], pure) and the DNS that answers it
//! ([`resolve`], hickory-resolver). The SMTP client session that uses the
//! hops comes next.
//!
//! ```no_run
//! # async fn f(dispatcher: &rsmtpd_config::model::RelayDispatcher) -> Result<(), Box<dyn std::error::Error>> {
//! use rsmtpd_mta::{Knobs, Resolver, XorShift, plan};
//! let knobs = Knobs::from_env()?;
//! let resolver = Resolver::from_knobs(&knobs)?;
//! let plan = plan(dispatcher, "example.org", knobs.mx_port(), |_| None)?;
//! let own = vec!["mx.example.net".to_string()];
//! for hop in resolver.route(&plan, &own, &mut XorShift::from_entropy()).await? {
//!     println!("{}:{} {:?}", hop.target.host, hop.target.port, hop.addrs);
//! }
//! # Ok(()) }
//! ```

pub mod resolve;
pub mod route;
pub mod spf;

pub use resolve::{Hop, KnobError, Knobs, MxAnswer, Resolver, ResolverError};
pub use route::{
    MxQuery, MxRecord, Plan, Protocol, Random, RouteError, Target, TlsMode, XorShift,
    order_addresses, plan, select_mx, smarthost_for, target_from_url,
};
