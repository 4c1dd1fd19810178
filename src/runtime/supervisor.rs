//! The supervisor: one long-lived thread that owns every plugin process. Spawning happens on
//! this thread only, because the executor arms PDEATHSIG, which the kernel fires when the
//! *thread* that forked exits: a short-lived worker thread would take its plugins down with it.
//!
//! A plugin that exits while supervised is restarted with exponential backoff (moby restarts
//! at once and forever); its state is readable by the manager at any time.

use std::collections::HashMap;
use std::io;
use std::process::ExitStatus;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::executor::{Executor, PluginProcess};
use super::logs::LogStore;
use super::spec::PluginSpec;

/// First restart delay; doubled per consecutive crash up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long before exiting starts the backoff from the beginning again.
pub const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// What the manager can observe about a plugin process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running {
        /// The process berth spawned (the executor's shim).
        pid: u32,
        /// The plugin's own first process (what `berth plugin exec` joins).
        plugin_pid: u32,
        restarts: u32,
        /// When this process was started.
        since: chrono::DateTime<chrono::Utc>,
    },
    /// Exited before it was declared ready (enable failed): not restarted.
    Exited { status: String },
    /// Crashed while supervised; starts again at `at`.
    Restarting {
        restarts: u32,
        at: Instant,
        last_status: String,
    },
}

impl RunState {
    /// The PID of the process berth spawned, 0 when none runs.
    pub fn pid(&self) -> u32 {
        match self {
            RunState::Running { pid, .. } => *pid,
            _ => 0,
        }
    }
}

enum Command {
    Start {
        id: String,
        spec: Box<PluginSpec>,
        reply: Sender<io::Result<u32>>,
    },
    Supervise {
        id: String,
    },
    Stop {
        id: String,
        grace: Duration,
        reply: Sender<()>,
    },
}

#[derive(Clone)]
pub struct Supervisor {
    commands: Sender<Command>,
    states: Arc<Mutex<HashMap<String, RunState>>>,
}

struct Supervised {
    spec: PluginSpec,
    process: Option<Box<dyn PluginProcess>>,
    supervise: bool,
    restarts: u32,
    started: Instant,
    next_start: Option<Instant>,
    stopping: Option<Stopping>,
}

struct Stopping {
    kill_at: Instant,
    killed: bool,
    replies: Vec<Sender<()>>,
}

impl Supervisor {
    pub fn spawn(executor: Arc<dyn Executor>, logs: LogStore) -> io::Result<Supervisor> {
        let (commands, receiver) = mpsc::channel();
        let states = Arc::new(Mutex::new(HashMap::new()));
        let shared = states.clone();
        std::thread::Builder::new()
            .name("plugin-supervisor".into())
            .spawn(move || run(executor, logs, receiver, shared))?;
        Ok(Supervisor { commands, states })
    }

    /// Starts a plugin process, unsupervised until [`Supervisor::supervise`] is called.
    pub fn start(&self, id: &str, spec: PluginSpec) -> io::Result<u32> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Start {
            id: id.to_string(),
            spec: Box::new(spec),
            reply,
        })?;
        answer.recv().map_err(|_| gone())?
    }

    /// From now on a crash of the plugin is answered with a restart.
    pub fn supervise(&self, id: &str) {
        let _ = self.send(Command::Supervise { id: id.to_string() });
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the process is gone and released.
    /// Stopping a plugin that does not run returns at once.
    pub fn stop(&self, id: &str, grace: Duration) {
        let (reply, answer) = mpsc::channel();
        if self
            .send(Command::Stop {
                id: id.to_string(),
                grace,
                reply,
            })
            .is_ok()
        {
            let _ = answer.recv();
        }
    }

    pub fn state(&self, id: &str) -> Option<RunState> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn send(&self, command: Command) -> io::Result<()> {
        self.commands.send(command).map_err(|_| gone())
    }
}

fn gone() -> io::Error {
    io::Error::other("the plugin supervisor has stopped")
}

fn backoff(restarts: u32) -> Duration {
    MIN_BACKOFF
        .checked_mul(1u32 << restarts.min(20))
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!(
            "killed by {}",
            Signal::try_from(signal)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| signal.to_string())
        ),
        _ => status.to_string(),
    }
}

fn run(
    executor: Arc<dyn Executor>,
    logs: LogStore,
    commands: Receiver<Command>,
    states: Arc<Mutex<HashMap<String, RunState>>>,
) {
    let mut plugins: HashMap<String, Supervised> = HashMap::new();
    let set_state = |id: &str, state: Option<RunState>| {
        let mut states = states.lock().unwrap_or_else(|p| p.into_inner());
        match state {
            Some(s) => states.insert(id.to_string(), s),
            None => states.remove(id),
        };
    };
    let launch = |id: &str, entry: &mut Supervised| -> io::Result<RunState> {
        let mut process = executor.start(&entry.spec)?;
        if let Some((stdout, stderr)) = process.take_output() {
            logs.forward(id.to_string(), "stdout", stdout);
            logs.forward(id.to_string(), "stderr", stderr);
        }
        let running = RunState::Running {
            pid: process.pid(),
            plugin_pid: process.plugin_pid(),
            restarts: entry.restarts,
            since: chrono::Utc::now(),
        };
        entry.process = Some(process);
        entry.started = Instant::now();
        entry.next_start = None;
        Ok(running)
    };

    loop {
        let busy = plugins
            .values()
            .any(|p| p.stopping.is_some() || p.next_start.is_some());
        let tick = if busy {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(50)
        };
        match commands.recv_timeout(tick) {
            Ok(Command::Start { id, spec, reply }) => {
                let mut entry = Supervised {
                    spec: *spec,
                    process: None,
                    supervise: false,
                    restarts: 0,
                    started: Instant::now(),
                    next_start: None,
                    stopping: None,
                };
                let result = launch(&id, &mut entry);
                let pid = match result {
                    Ok(running) => {
                        let pid = running.pid();
                        set_state(&id, Some(running));
                        plugins.insert(id, entry);
                        Ok(pid)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(pid);
            }
            Ok(Command::Supervise { id }) => {
                if let Some(entry) = plugins.get_mut(&id) {
                    entry.supervise = true;
                }
            }
            Ok(Command::Stop { id, grace, reply }) => match plugins.get_mut(&id) {
                Some(entry) if entry.process.is_some() => {
                    entry.supervise = false;
                    entry.next_start = None;
                    let stopping = entry.stopping.get_or_insert(Stopping {
                        kill_at: Instant::now() + grace,
                        killed: false,
                        replies: Vec::new(),
                    });
                    stopping.replies.push(reply);
                    if let Some(process) = &entry.process {
                        if let Err(e) = process.signal(Signal::SIGTERM) {
                            log::debug!("SIGTERM to plugin {id}: {e}");
                        }
                    }
                }
                _ => {
                    plugins.remove(&id);
                    set_state(&id, None);
                    let _ = reply.send(());
                }
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }

        let now = Instant::now();
        let mut finished = Vec::new();
        for (id, entry) in plugins.iter_mut() {
            if let Some(process) = entry.process.as_mut() {
                match process.try_wait() {
                    Ok(Some(_)) => {
                        let status = process
                            .wait()
                            .map(|s| describe(&s))
                            .unwrap_or_else(|e| e.to_string());
                        entry.process = None;
                        if let Some(stopping) = entry.stopping.take() {
                            for reply in stopping.replies {
                                let _ = reply.send(());
                            }
                            finished.push(id.clone());
                        } else if entry.supervise {
                            if entry.started.elapsed() >= HEALTHY_RUN {
                                entry.restarts = 0;
                            }
                            let delay = backoff(entry.restarts);
                            entry.restarts += 1;
                            entry.next_start = Some(now + delay);
                            let note = format!(
                                "plugin exited unexpectedly ({status}); restart {} in {delay:?}",
                                entry.restarts
                            );
                            log::warn!(target: "plugin", plugin = id.as_str(); "{note}");
                            logs.append(id, "daemon", note);
                            set_state(
                                id,
                                Some(RunState::Restarting {
                                    restarts: entry.restarts,
                                    at: now + delay,
                                    last_status: status,
                                }),
                            );
                        } else {
                            set_state(id, Some(RunState::Exited { status }));
                        }
                    }
                    Ok(None) => {
                        if let Some(stopping) = entry.stopping.as_mut() {
                            if !stopping.killed && now >= stopping.kill_at {
                                stopping.killed = true;
                                let _ = process.signal(Signal::SIGKILL);
                            }
                        }
                    }
                    Err(e) => log::error!("waiting for plugin {id}: {e}"),
                }
            }
            if entry.next_start.is_some_and(|at| now >= at) {
                match launch(id, entry) {
                    Ok(running) => {
                        let pid = running.pid();
                        crate::metrics::plugin_restart(id);
                        logs.append(id, "daemon", format!("plugin restarted (pid {pid})"));
                        set_state(id, Some(running));
                    }
                    Err(e) => {
                        let delay = backoff(entry.restarts);
                        entry.restarts += 1;
                        entry.next_start = Some(now + delay);
                        log::error!(target: "plugin", plugin = id.as_str(); "restart failed: {e}; next try in {delay:?}");
                    }
                }
            }
        }
        for id in finished {
            plugins.remove(&id);
            set_state(&id, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(1600));
        assert_eq!(backoff(12), MAX_BACKOFF);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
