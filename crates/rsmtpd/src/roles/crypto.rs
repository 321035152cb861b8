//! The crypto role: the only process that reads the pki private keys. It
//! loads them as root, drops to `_smtpd` in an empty chroot, and then only
//! answers two questions from smtp and mta: "what are the certificates?"
//! and "sign this handshake message with key N". A bug in the code that
//! parses the network can ask for signatures, never for a key.

use std::sync::Arc;

use rsmtpd_ipc::BlockingChannel;
use rsmtpd_tls::KeyHolder;

use crate::links::{FromCrypto, ParentToChild, PkiPublic, Role, Start, ToCrypto};
use crate::roles::{ParentLink, Received, RoleError};
use crate::{log_debug, log_warn};

/// Largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

pub fn run(start: Start, mut parent: ParentLink, mut fds: Received) -> Result<(), RoleError> {
    let (keys, public) = load(&start)?;
    let keys = Arc::new(keys);
    let smtp = fds.link(Role::Smtp)?;
    let mta = fds.link(Role::Mta)?;
    crate::privsep::apply(start.mode, &super::privileges(Role::Crypto, &start))?;
    super::ready(&mut parent)?;
    for (peer, fd) in [(Role::Smtp, smtp), (Role::Mta, mta)] {
        let link: BlockingChannel<FromCrypto, ToCrypto> = BlockingChannel::from_fd(fd)?;
        let keys = keys.clone();
        let public = public.clone();
        std::thread::Builder::new()
            .name(format!("crypto-{}", peer.name()))
            .spawn(move || serve(peer, link, &keys, public))
            .map_err(|e| RoleError::Setup(format!("thread: {e}")))?;
    }
    // The serving threads end with the process; it ends when the parent
    // says so or goes away.
    loop {
        match parent.recv() {
            Ok(Some((ParentToChild::Shutdown, _))) | Ok(None) | Err(_) => return Ok(()),
            Ok(Some((ParentToChild::Logging(v), _))) => crate::logging::apply(v),
            Ok(Some(_)) => {}
        }
    }
}

/// Reads every pki's certificate chain and key, and checks they match.
fn load(start: &Start) -> Result<(KeyHolder, Vec<PkiPublic>), RoleError> {
    let mut keys = KeyHolder::new();
    let mut public = Vec::new();
    for pki in &start.config.pkis {
        let fail =
            |what: &str, e: String| RoleError::Setup(format!("pki {}: {what}: {e}", pki.name));
        let cert_pem = read_pem(&pki.cert).map_err(|e| fail("certificate", e))?;
        let chain = rsmtpd_tls::read_cert_chain(&cert_pem)
            .map_err(|e| fail(&pki.cert.display().to_string(), e.to_string()))?;
        let key_pem = read_pem(&pki.key).map_err(|e| fail("key", e))?;
        let key = rsmtpd_tls::read_private_key(&key_pem)
            .map_err(|e| fail(&pki.key.display().to_string(), e.to_string()))?;
        drop(key_pem);
        let info = keys
            .add(&chain, key)
            .map_err(|e| fail("key and certificate", e.to_string()))?;
        public.push(PkiPublic {
            name: pki.name.clone(),
            chain: chain.iter().map(|c| c.as_ref().to_vec()).collect(),
            key: info,
        });
    }
    Ok((keys, public))
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{}: larger than {MAX_PEM_BYTES} bytes",
            path.display()
        ));
    }
    Ok(buf)
}

/// Answers one peer until its link closes. A malformed frame ends the
/// link (the peer is buggy or compromised), never the process.
fn serve(
    peer: Role,
    mut link: BlockingChannel<FromCrypto, ToCrypto>,
    keys: &KeyHolder,
    public: Vec<PkiPublic>,
) {
    loop {
        let request = match link.recv() {
            Ok(Some((request, _))) => request,
            Ok(None) => return,
            Err(e) => {
                log_warn!("crypto: link to {}: {e}", peer.name());
                return;
            }
        };
        let answer = match request {
            ToCrypto::Describe => FromCrypto::Pkis(public.clone()),
            ToCrypto::Sign {
                key,
                scheme,
                message,
            } => {
                let signed = keys.sign(key, scheme, &message).map_err(|e| e.to_string());
                if let Err(e) = &signed {
                    log_warn!("crypto: {} asked for a signature: {e}", peer.name());
                } else {
                    log_debug!("crypto: signed for {} with key {key}", peer.name());
                }
                FromCrypto::Signed(signed)
            }
        };
        if link.send(&answer, Vec::new()).is_err() {
            return;
        }
    }
}
