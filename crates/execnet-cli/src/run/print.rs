//! What `execnet run` prints while the code runs: items, remote output, remote errors.
//!
//! Text mode: items on stdout as Python literals, remote stdout on stdout, remote stderr
//! and tracebacks on stderr; with several gateways every line starts with `[ID] `, and
//! remote output is assembled into whole lines first so that hosts never cut into each
//! other's lines. With one gateway remote output is passed on as it comes (a partial line
//! that the remote code flushed shows at once).
//!
//! `--json`: one JSON object per line on stdout, whatever its kind:
//! `{"gateway": ID, "item": VALUE}`, `{"gateway": ID, "stdout": LINE}`,
//! `{"gateway": ID, "stderr": LINE}`, `{"gateway": ID, "error": TRACEBACK}`, and at the
//! end of each gateway `{"gateway": ID, "status": "ok", "seconds": 1.5}` (with a
//! `"detail"` when it failed). Lines are given without their newline.
//!
//! A write to stdout that fails (the reader went away: `| head`) is reported once, and
//! the run is aborted.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use execnet::{OutputStream, Value};
use indicatif::ProgressBar;

use crate::json::to_json;

pub(crate) struct Printer {
    pub(crate) json: bool,
    /// Several gateways: tag lines, assemble remote output into lines.
    pub(crate) tagged: bool,
    stdout: Mutex<io::Stdout>,
    bar: ProgressBar,
    /// stdout failed: nothing more is written to it.
    broken: AtomicBool,
}

/// Remote output of one gateway not yet printed: the partial last line of each stream.
#[derive(Default)]
pub(crate) struct Lines {
    out: String,
    err: String,
}

impl Printer {
    pub(crate) fn new(json: bool, tagged: bool, bar: ProgressBar) -> Printer {
        Printer { json, tagged, stdout: Mutex::new(io::stdout()), bar, broken: AtomicBool::new(false) }
    }

    /// True once a write to stdout failed.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    fn tag(&self, id: &str) -> String {
        if self.tagged {
            format!("[{id}] ")
        } else {
            String::new()
        }
    }

    /// Writes `text` to stdout (with the bar out of the way). An error means stdout is gone.
    fn to_stdout(&self, text: &str) -> io::Result<()> {
        if self.is_broken() {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        let res = self.bar.suspend(|| {
            let mut out = self.stdout.lock().unwrap_or_else(|e| e.into_inner());
            out.write_all(text.as_bytes()).and_then(|_| out.flush())
        });
        if res.is_err() {
            self.broken.store(true, Ordering::Relaxed);
        }
        res
    }

    fn to_stderr(&self, text: &str) {
        self.bar.suspend(|| {
            let mut err = io::stderr().lock();
            let _ = err.write_all(text.as_bytes());
            let _ = err.flush();
        });
    }

    fn json_line(&self, id: &str, key: &str, value: serde_json::Value) -> io::Result<()> {
        let mut obj = serde_json::Map::new();
        obj.insert("gateway".into(), id.into());
        obj.insert(key.into(), value);
        let mut line = serde_json::Value::Object(obj).to_string();
        line.push('\n');
        self.to_stdout(&line)
    }

    /// An item the code sent.
    pub(crate) fn item(&self, id: &str, value: &Value) -> io::Result<()> {
        if self.json {
            self.json_line(id, "item", to_json(value))
        } else {
            self.to_stdout(&format!("{}{value}\n", self.tag(id)))
        }
    }

    /// Remote output; whole lines are printed, a partial one waits in `lines`.
    pub(crate) fn output(&self, id: &str, lines: &mut Lines, stream: OutputStream, text: &str) -> io::Result<()> {
        if !self.json && !self.tagged {
            return match stream {
                OutputStream::Stdout => self.to_stdout(text),
                OutputStream::Stderr => {
                    self.to_stderr(text);
                    Ok(())
                }
            };
        }
        let pending = match stream {
            OutputStream::Stdout => &mut lines.out,
            OutputStream::Stderr => &mut lines.err,
        };
        pending.push_str(text);
        let Some(cut) = pending.rfind('\n') else { return Ok(()) };
        let whole: String = pending.drain(..=cut).collect();
        self.print_lines(id, stream, &whole)
    }

    /// Prints what is left of partial lines (at the end of a gateway's run).
    pub(crate) fn finish_lines(&self, id: &str, lines: &mut Lines) -> io::Result<()> {
        for (stream, pending) in [(OutputStream::Stdout, &mut lines.out), (OutputStream::Stderr, &mut lines.err)] {
            if !pending.is_empty() {
                let rest = std::mem::take(pending);
                self.print_lines(id, stream, &rest)?;
            }
        }
        Ok(())
    }

    fn print_lines(&self, id: &str, stream: OutputStream, text: &str) -> io::Result<()> {
        if self.json {
            for line in text.lines() {
                self.json_line(id, stream.as_str(), line.into())?;
            }
            return Ok(());
        }
        let tag = self.tag(id);
        let mut block = String::with_capacity(text.len() + 16);
        for line in text.lines() {
            block.push_str(&tag);
            block.push_str(line);
            block.push('\n');
        }
        match stream {
            OutputStream::Stdout => self.to_stdout(&block),
            OutputStream::Stderr => {
                self.to_stderr(&block);
                Ok(())
            }
        }
    }

    /// The remote code raised: its traceback.
    pub(crate) fn remote_error(&self, id: &str, traceback: &str) -> io::Result<()> {
        if self.json {
            return self.json_line(id, "error", traceback.trim_end().into());
        }
        let tag = self.tag(id);
        let mut block = format!("{tag}remote error on {id}:\n");
        for line in traceback.trim_end().lines() {
            block.push_str(&tag);
            block.push_str(line);
            block.push('\n');
        }
        self.to_stderr(&block);
        Ok(())
    }

    /// A message of ours about one gateway (a failure to start, a timeout), on stderr.
    pub(crate) fn note(&self, id: &str, message: &str) {
        self.to_stderr(&format!("execnet: {}{message}\n", self.tag(id)));
    }

    /// The end of one gateway, in `--json` mode.
    pub(crate) fn status(&self, id: &str, label: &str, seconds: f64, detail: &str) -> io::Result<()> {
        if !self.json {
            return Ok(());
        }
        let mut obj = serde_json::Map::new();
        obj.insert("gateway".into(), id.into());
        obj.insert("status".into(), label.into());
        obj.insert("seconds".into(), serde_json::json!((seconds * 1000.0).round() / 1000.0));
        if !detail.is_empty() {
            obj.insert("detail".into(), detail.into());
        }
        let mut line = serde_json::Value::Object(obj).to_string();
        line.push('\n');
        self.to_stdout(&line)
    }
}
