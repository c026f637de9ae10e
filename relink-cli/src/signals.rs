//! SIGINT and SIGTERM: abort the sessions, let the peers know, exit 130.
//! A server with `--drain-timeout` drains on the first SIGTERM instead
//! (see `node`); a second signal aborts as usual.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use relink::blocking::AbortHandle;
use relink::AbortCode;

use crate::{log, status};

/// Set once SIGINT or SIGTERM arrived: the signal thread aborts the
/// sessions and exits the process.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Errors caused by the interrupt's own abort must not end the process
/// before the peers were told: leave that to the signal thread.
pub fn let_the_interrupt_finish() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        loop {
            thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

/// Sessions to abort when SIGINT or SIGTERM arrives: the signal thread
/// aborts each with `INTERRUPTED`, waits (at most 0.8 s in all) for the
/// peers to acknowledge, and exits with status 130.
#[derive(Clone, Default)]
pub struct Interrupts(Arc<Mutex<(u64, HashMap<u64, AbortHandle>)>>);

/// Unregisters its session when dropped.
pub struct Registered(Interrupts, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.0 .0).1.remove(&self.1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Interrupts {
    /// Take over SIGINT and SIGTERM (installed before this returns).
    pub fn install() -> io::Result<Interrupts> {
        Interrupts::install_draining(None)
    }

    /// [`Interrupts::install`], where the first SIGTERM runs `on_term` on
    /// a thread of its own instead (a drain, which ends the process
    /// itself) when it is given; the next signal aborts.
    pub fn install_draining(on_term: Option<Box<dyn FnOnce() + Send>>) -> io::Result<Interrupts> {
        let me = Interrupts::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        #[cfg(unix)]
        let (mut int, mut term) = {
            use tokio::signal::unix::{signal, SignalKind};
            let _guard = rt.enter();
            (
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            )
        };
        let reg = me.clone();
        thread::Builder::new()
            .name("relink-signals".into())
            .spawn(move || {
                #[cfg(unix)]
                let which = {
                    let mut on_term = on_term;
                    loop {
                        let which = rt.block_on(async {
                            tokio::select! {
                                _ = int.recv() => "SIGINT",
                                _ = term.recv() => "SIGTERM",
                            }
                        });
                        match on_term.take() {
                            Some(f) if which == "SIGTERM" => {
                                let _ = thread::Builder::new().name("relink-drain".into()).spawn(f);
                            }
                            _ => break which,
                        }
                    }
                };
                #[cfg(not(unix))]
                drop(on_term);
                #[cfg(not(unix))]
                let which = rt.block_on(async {
                    let _ = tokio::signal::ctrl_c().await;
                    "Ctrl-C"
                });
                INTERRUPTED.store(true, Ordering::SeqCst);
                let handles: Vec<AbortHandle> = lock(&reg.0).1.values().cloned().collect();
                for h in &handles {
                    h.abort(AbortCode::INTERRUPTED);
                }
                let end = Instant::now() + std::time::Duration::from_millis(800);
                let mut acked = 0;
                for h in &handles {
                    if h.wait_closed(end.saturating_duration_since(Instant::now())) {
                        acked += 1;
                    }
                }
                // No status line under these, none drawn after; a node's
                // summary is the last line on every exit path.
                log::end_status();
                log::say(format!(
                    "relink: {which}: aborted {} session(s) ({acked} acknowledged by the peer)",
                    handles.len()
                ));
                crate::node::print_summary();
                std::process::exit(status::INTERRUPTED);
            })?;
        Ok(me)
    }

    pub fn register(&self, h: AbortHandle) -> Registered {
        let mut g = lock(&self.0);
        g.0 += 1;
        let id = g.0;
        g.1.insert(id, h);
        Registered(self.clone(), id)
    }
}
