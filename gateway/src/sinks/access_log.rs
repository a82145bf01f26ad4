//! The access-log sink: one line per finished call, written by a thread of its own.
//!
//! A proxy worker only formats the line (see `crate::access_log`) and hands it to a
//! bounded channel; it never waits on stdout, which a slow log collector or a full
//! pipe can stall. The writer thread writes the lines in order and flushes as soon
//! as the channel is empty, so a reader sees each line promptly. When the writer
//! falls [`CAPACITY`] lines behind, further lines are dropped and counted
//! (`celgate_access_log_dropped`) instead of slowing requests down. At shutdown,
//! [`AccessLog::close`] writes what is queued before the process exits.

use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::record::Finished;
use celgate_engine::config::AccessLogFormat;

/// Lines queued for the writer at most.
pub const CAPACITY: usize = 4096;

enum Message {
    Line(String),
    /// Write what came before, then stop and say so.
    Close(mpsc::Sender<()>),
}

/// The access log's side of the channel to its writer thread.
pub struct AccessLog {
    queue: SyncSender<Message>,
    dropped: Counter,
}

impl AccessLog {
    /// Writes to the process's stdout.
    pub fn stdout(dropped: Counter) -> AccessLog {
        AccessLog::start(std::io::stdout(), CAPACITY, dropped)
    }

    /// Writes to `out`, `capacity` lines queued at most; lines over it are counted
    /// in `dropped`.
    pub fn start<W: Write + Send + 'static>(
        out: W,
        capacity: usize,
        dropped: Counter,
    ) -> AccessLog {
        let (queue, lines) = mpsc::sync_channel(capacity);
        let spawned = std::thread::Builder::new()
            .name("celgate-access-log".into())
            .spawn(move || write_lines(lines, out));
        if let Err(e) = spawned {
            // Every line is then dropped and counted: the proxy still serves.
            tracing::error!("cannot start the access-log writer thread: {e}");
        }
        AccessLog { queue, dropped }
    }

    /// Queues the line of `record`, in its generation's format (`off`: none).
    pub fn accept(&self, record: &Finished) {
        // Off: the entry (ids and an endpoint formatted as text) is not even built.
        if record.access_log == AccessLogFormat::Off {
            return;
        }
        if let Some(line) = crate::access_log::line(record.access_log, &record.access_entry()) {
            self.push(line);
        }
    }

    /// Queues `line`, or drops and counts it when the writer is too far behind.
    pub fn push(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(Message::Line(line))
        {
            self.dropped.inc();
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Has the writer write every line queued so far and stop, waiting at most
    /// `within`; false if it did not finish in time. Lines queued later are dropped.
    pub fn close(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (ack, done) = mpsc::channel();
        let mut close = Message::Close(ack);
        loop {
            match self.queue.try_send(close) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return true,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    close = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return false,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        done.recv_timeout(left).is_ok()
    }
}

/// The writer thread: lines in order, a flush whenever none is waiting.
fn write_lines(lines: Receiver<Message>, mut out: impl Write) {
    let ack = 'run: loop {
        let Ok(first) = lines.recv() else {
            break 'run None;
        };
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Message::Close(ack) => break 'run Some(ack),
            }
            next = lines.try_recv().ok();
        }
        let _ = out.flush();
    };
    // Gone before the answer: a line sent after `close` returns is counted dropped.
    drop(lines);
    let _ = out.flush();
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer whose bytes the test can read, and that can be held shut.
    #[derive(Clone, Default)]
    struct Shared {
        bytes: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(out: &Shared) -> String {
        String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_are_written_in_order_and_promptly() {
        let out = Shared::default();
        let log = AccessLog::start(out.clone(), 16, Counter::default());
        log.push("a\n".into());
        log.push("b\n".into());
        // Written without a close: a reader waiting for the line sees it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while text(&out) != "a\nb\n" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(text(&out), "a\nb\n");
        assert!(log.close(Duration::from_secs(30)));
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn a_stalled_writer_costs_lines_not_time_and_close_writes_the_queue() {
        let out = Shared::default();
        let stall = out.gate.lock().unwrap();
        let log = AccessLog::start(out.clone(), 4, Counter::default());
        let started = Instant::now();
        for i in 0..100 {
            log.push(format!("{i}\n"));
        }
        // 100 pushes against a writer that cannot write: none of them waited.
        assert!(started.elapsed() < Duration::from_secs(10));
        // At most the queue and the one line the writer holds got through.
        let dropped = log.dropped();
        assert!((95..=96).contains(&dropped), "{dropped}");
        drop(stall);
        assert!(log.close(Duration::from_secs(30)));
        let written = text(&out);
        assert_eq!(written.lines().count() as u64, 100 - dropped);
        assert!(written.starts_with("0\n1\n2\n3\n"), "{written}");
        log.push("late\n".into());
        assert_eq!(log.dropped(), dropped + 1, "a line after close is counted");
    }
}
