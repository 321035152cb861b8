//! The control role: serves the control socket (docs/operations.md) that
//! smtpctl and sendmail connect to. Any local user can, so every
//! connection is untrusted: one bounded first frame, read with a deadline;
//! the user is who the kernel says (SO_PEERCRED). A local submission
//! (`Enqueue`) hands the connection itself to smtp, which runs an SMTP
//! session on it for that user.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use rsmtpd_ipc::Channel;
use rsmtpd_ipc::frame::{FrameHeader, HEADER_LEN};
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::control_proto::{Reply, Request};
use crate::links::{ControlToSmtp, FdKind, Role, Start};
use crate::roles::{ParentLink, Received, RoleError, writer};
use crate::{log_info, log_warn};

/// The first frame must arrive within this.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// A request is a few words; anything bigger is refused unread.
const MAX_REQUEST: usize = 64 * 1024;
/// Connections being read at once; more wait in the kernel's backlog.
const MAX_PENDING: usize = 64;

pub fn run(start: Start, mut parent: ParentLink, mut fds: Received) -> Result<(), RoleError> {
    let socket = fds
        .take(&FdKind::ControlSocket)
        .ok_or_else(|| RoleError::Setup("no control socket was passed".into()))?;
    let smtp = fds.link(Role::Smtp)?;
    crate::privsep::apply(start.mode, &super::privileges(Role::Control, &start))?;
    super::ready(&mut parent)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let parent = parent.into_async()?;
        let listener = std::os::unix::net::UnixListener::from(socket);
        listener
            .set_nonblocking(true)
            .map_err(|e| RoleError::Setup(format!("control socket: {e}")))?;
        let listener = UnixListener::from_std(listener)
            .map_err(|e| RoleError::Setup(format!("control socket: {e}")))?;
        let smtp: Channel<ControlToSmtp, ControlToSmtp> = Channel::from_fd(smtp)?;
        let (smtp_tx, _smtp_rx) = smtp.split();
        let smtp = writer(smtp_tx);
        let pending = Arc::new(Semaphore::new(MAX_PENDING));
        let serve = async {
            loop {
                let Ok(permit) = pending.clone().acquire_owned().await else {
                    return;
                };
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let smtp = smtp.clone();
                        tokio::spawn(async move {
                            connection(stream, &smtp).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        log_warn!("control: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        tokio::select! {
            () = serve => Ok(()),
            r = super::wait_for_shutdown(parent) => r,
        }
    })
}

type SmtpLink = tokio::sync::mpsc::UnboundedSender<(ControlToSmtp, Vec<OwnedFd>)>;

/// One client: its first frame, then what it asked for.
async fn connection(mut stream: UnixStream, smtp: &SmtpLink) {
    let Ok(cred) = rsmtpd_ipc::peer_cred(&stream) else {
        return;
    };
    let uid = cred.uid.as_raw();
    let request = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, first_frame(&mut stream)).await {
        Ok(Ok(request)) => request,
        Ok(Err(why)) => {
            log_warn!("control: uid {uid}: {why}");
            return;
        }
        Err(_) => {
            log_warn!("control: uid {uid}: no request in time");
            return;
        }
    };
    match request {
        Request::Enqueue => {
            let user = nix::unistd::User::from_uid(cred.uid)
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |u| u.name);
            let Ok(std) = stream.into_std() else {
                return;
            };
            // The connection goes to smtp as it is: nothing was read past
            // the request.
            let fd = OwnedFd::from(std);
            if smtp
                .send((ControlToSmtp::Enqueue { uid, user }, vec![fd]))
                .is_err()
            {
                log_warn!("control: smtp is gone");
            }
        }
    }
}

/// Reads exactly one request frame (never a byte more: what follows may
/// be an SMTP session for smtp to read).
async fn first_frame(stream: &mut UnixStream) -> Result<Request, String> {
    let mut header = [0u8; HEADER_LEN];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    let header = FrameHeader::decode(header).map_err(|e| format!("bad request: {e}"))?;
    if header.fd_count() != 0 {
        return Err("bad request: descriptors are not accepted".into());
    }
    if header.payload_len() > MAX_REQUEST {
        return Err(format!(
            "bad request: {} bytes, at most {MAX_REQUEST}",
            header.payload_len()
        ));
    }
    let mut payload = vec![0u8; header.payload_len()];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    rsmtpd_ipc::decode_message::<Request>(&payload).map_err(|e| format!("bad request: {e}"))
}

/// A refusal to a client that asked for something else than enqueue.
#[allow(dead_code)]
async fn refuse(stream: &mut UnixStream, why: &str) {
    use tokio::io::AsyncWriteExt;
    if let Ok(frame) = rsmtpd_ipc::encode_message(&Reply::Refused(why.to_owned()), 0) {
        let _ = stream.write_all(&frame).await;
    }
    log_info!("control: refused: {why}");
}
