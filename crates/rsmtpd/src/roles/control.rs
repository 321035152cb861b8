//! The control role: will serve smtpctl's socket (a later issue). For now
//! it starts, drops privileges and waits, so the process layout is the
//! final one from the start.

use crate::links::{Role, Start};
use crate::roles::{ParentLink, Received, RoleError};

pub fn run(start: Start, mut parent: ParentLink, _fds: Received) -> Result<(), RoleError> {
    crate::privsep::apply(start.mode, &super::privileges(Role::Control, &start))?;
    super::ready(&mut parent)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let parent = parent.into_async()?;
        super::wait_for_shutdown(parent).await
    })
}
