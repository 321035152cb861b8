//! Random numbers for ids, read from the kernel.
//!
//! The queue process runs chrooted to the spool where /dev/urandom does not
//! exist, so the device is opened once (before the chroot) and kept open.

use std::fs::File;
use std::io::{self, Read};

/// An open handle on /dev/urandom.
#[derive(Debug)]
pub struct Urandom {
    file: File,
}

impl Urandom {
    /// Opens /dev/urandom. Call before chroot.
    pub fn open() -> io::Result<Urandom> {
        Ok(Urandom {
            file: File::open("/dev/urandom")?,
        })
    }

    /// Fills `buf` with random bytes. `&self` because reads of the device
    /// need no coordination between threads.
    pub fn fill(&self, buf: &mut [u8]) -> io::Result<()> {
        (&self.file).read_exact(buf)
    }

    /// A random u32.
    pub fn next_u32(&self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::Urandom;

    #[test]
    fn values_differ() {
        let r = Urandom::open().unwrap();
        let a: Vec<u32> = (0..8).map(|_| r.next_u32().unwrap()).collect();
        // 8 equal u32 from a working source has probability 2^-224.
        assert!(a.iter().any(|&x| x != a[0]));
    }
}
