//! Pieces of the crash tests' load generators: a client that reports
//! errors instead of panicking (the daemon may vanish at any byte) and a
//! small seeded random generator for kill moments.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub type Res<T> = Result<T, String>;

/// An SMTP client for load: every failure is an `Err`, every read and
/// write has a timeout.
pub struct LoadClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LoadClient {
    /// Connect, read the greeting and say EHLO `helo`.
    pub fn connect(addr: SocketAddr, helo: &str) -> Res<LoadClient> {
        let s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        let mut c = LoadClient {
            reader: BufReader::new(s),
            writer,
        };
        let greeting = c.reply()?;
        if !greeting.starts_with("220 ") {
            return Err(format!("greeting {greeting:?}"));
        }
        let ehlo = c.cmd(&format!("EHLO {helo}"))?;
        if !ehlo.starts_with("250") {
            return Err(format!("EHLO {ehlo:?}"));
        }
        Ok(c)
    }

    /// One reply, all its lines (at most 100).
    pub fn reply(&mut self) -> Res<String> {
        let mut out = String::new();
        for _ in 0..100 {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            out.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(out);
            }
        }
        Err("reply too long".into())
    }

    pub fn cmd(&mut self, line: &str) -> Res<String> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        self.reply()
    }

    /// One transaction from loader@example.net with `data` (without the
    /// final dot); Ok(true) when the message got its 250.
    pub fn message(&mut self, rcpts: &[String], data: &str) -> Res<bool> {
        let expect = |r: String, code: &str| {
            if r.starts_with(code) {
                Ok(())
            } else {
                Err(format!("unexpected reply {r:?}"))
            }
        };
        expect(self.cmd("MAIL FROM:<loader@example.net>")?, "250")?;
        for r in rcpts {
            expect(self.cmd(&format!("RCPT TO:<{r}>"))?, "250")?;
        }
        expect(self.cmd("DATA")?, "354")?;
        let r = self.cmd(&format!("{data}\r\n."))?;
        Ok(r.starts_with("250 "))
    }
}

/// xorshift64*: enough randomness for kill moments, reproducible by seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
