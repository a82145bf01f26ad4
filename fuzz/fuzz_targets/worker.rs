//! One long-lived thread with the engine's compile stack runs every input, so
//! that no input pays for spawning a 256 MiB-stack thread (under
//! AddressSanitizer that cost more than the work itself).
//!
//! A panic on the worker is still a crash: libFuzzer's panic hook aborts the
//! process before the panic unwinds. A hang is still a timeout: the main thread
//! waits for the worker.

use std::sync::mpsc::{Sender, SyncSender, channel, sync_channel};
use std::sync::{LazyLock, Mutex};

type Job = Box<dyn FnOnce() + Send>;

static WORKER: LazyLock<Mutex<Sender<(Job, SyncSender<()>)>>> = LazyLock::new(|| {
    let (tx, rx) = channel::<(Job, SyncSender<()>)>();
    celgate_engine::fuzzing::spawn_with_compile_stack(move || {
        for (job, done) in rx {
            job();
            let _ = done.send(());
        }
    })
    .expect("spawn the fuzz worker thread");
    Mutex::new(tx)
});

/// Run `job` on the worker and wait for it.
pub fn run(job: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = sync_channel(1);
    WORKER
        .lock()
        .unwrap()
        .send((Box::new(job), done_tx))
        .expect("fuzz worker alive");
    done_rx.recv().expect("fuzz worker finished the input");
}
