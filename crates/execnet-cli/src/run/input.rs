//! `--stdin`: our standard input, given to the code on every gateway.
//!
//! One thread reads stdin into a shared log (every gateway gets all of it, whenever it
//! starts); a feeder per gateway sends the log as items on the code's channel, then
//! CHANNEL_LAST_MESSAGE, after which the remote `channel.receive()` raises EOFError and
//! `for line in channel` ends. `--stdin=lines` (the default) sends each line as a `str`
//! with its newline, as `for line in sys.stdin` gives them, so `channel.makefile("r")`
//! reads the text back whole; `--stdin=bytes` sends `bytes` chunks of up to 64 KiB.

use std::io::{BufRead, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use execnet::Channel;

/// How `--stdin` cuts the input into items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StdinMode {
    /// One `str` item per line, newline included (invalid UTF-8 is replaced, with a warning).
    Lines,
    /// `bytes` items of up to 64 KiB.
    Bytes,
}

enum Chunk {
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Default)]
struct Log {
    chunks: Vec<Arc<Chunk>>,
    ended: bool,
}

/// The input read so far; readers wait for more.
#[derive(Clone)]
pub(crate) struct Input {
    shared: Arc<(Mutex<Log>, Condvar)>,
}

impl Input {
    /// Starts the thread that reads stdin.
    pub(crate) fn read_stdin(mode: StdinMode) -> Input {
        let input = Input { shared: Arc::new((Mutex::new(Log::default()), Condvar::new())) };
        let writer = input.clone();
        std::thread::Builder::new()
            .name("execnet-stdin".into())
            .spawn(move || writer.fill(mode))
            .expect("spawning the stdin thread");
        input
    }

    fn push(&self, chunk: Option<Chunk>) {
        let (lock, cond) = &*self.shared;
        let mut log = lock.lock().unwrap_or_else(|e| e.into_inner());
        match chunk {
            Some(c) => log.chunks.push(Arc::new(c)),
            None => log.ended = true,
        }
        cond.notify_all();
    }

    fn fill(&self, mode: StdinMode) {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        let mut warned = false;
        loop {
            let mut buf = Vec::new();
            let n = match mode {
                StdinMode::Lines => stdin.read_until(b'\n', &mut buf),
                StdinMode::Bytes => {
                    buf.resize(64 << 10, 0);
                    let n = stdin.read(&mut buf);
                    if let Ok(n) = n {
                        buf.truncate(n);
                    }
                    n
                }
            };
            match n {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("execnet: reading stdin failed: {e}; the code sees the end of its input");
                    break;
                }
            }
            let chunk = match mode {
                StdinMode::Bytes => Chunk::Bytes(buf),
                StdinMode::Lines => match String::from_utf8(buf) {
                    Ok(s) => Chunk::Text(s),
                    Err(e) => {
                        if !warned {
                            warned = true;
                            eprintln!("execnet: stdin is not UTF-8 text: invalid bytes are replaced (use --stdin=bytes for binary input)");
                        }
                        Chunk::Text(String::from_utf8_lossy(e.as_bytes()).into_owned())
                    }
                },
            };
            self.push(Some(chunk));
        }
        self.push(None);
    }

    /// Sends all input to `channel` in a thread of its own, then ends the channel's
    /// input; stops early when the channel closes (the code finished).
    pub(crate) fn feed(&self, channel: Channel) {
        let input = self.clone();
        let spawned = std::thread::Builder::new().name("execnet-feed".into()).spawn(move || {
            let (lock, cond) = &*input.shared;
            let mut next = 0;
            loop {
                let chunk = {
                    let mut log = lock.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        if let Some(c) = log.chunks.get(next) {
                            break Some(c.clone());
                        }
                        if log.ended || channel.is_closed() {
                            break None;
                        }
                        log = cond.wait_timeout(log, Duration::from_millis(200)).unwrap_or_else(|e| e.into_inner()).0;
                    }
                };
                let Some(chunk) = chunk else { break };
                next += 1;
                let sent = match &*chunk {
                    Chunk::Text(s) => channel.send(s.as_str()),
                    Chunk::Bytes(b) => channel.send(&execnet::Value::Bytes(b.clone())),
                };
                if sent.is_err() {
                    return; // the code finished or the gateway went away
                }
            }
            let _ = channel.close_sending();
        });
        if spawned.is_err() {
            eprintln!("execnet: cannot start a thread to send stdin");
        }
    }
}
