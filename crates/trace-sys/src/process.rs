//! Child processes a campaign starts and must stop (an engine under test): started in a
//! process group of their own, stopped as a service manager would: SIGINT to the whole group,
//! a grace period, SIGTERM, then SIGKILL. The group matters because an engine command is run
//! through `sh -c` and engines fork workers: a signal to the shell alone would orphan them.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

/// Puts the command's process in a new process group (its pid is the group id).
pub fn own_group(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0)
}

/// How [`stop_group`] ended the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It had already exited.
    Exited,
    /// It exited after SIGINT, within the grace period.
    Interrupted,
    /// It needed SIGTERM.
    Terminated,
    /// It needed SIGKILL.
    Killed,
}

/// Stops `child` and its process group: SIGINT, up to `grace` to exit, SIGTERM, 5 s more, then
/// SIGKILL. Waits for the child so no zombie is left.
pub fn stop_group(child: &mut Child, grace: Duration) -> Stopped {
    if let Ok(Some(_)) = child.try_wait() {
        return Stopped::Exited;
    }
    let Some(pgid) = Pid::from_raw(child.id() as i32) else {
        let _ = child.kill();
        let _ = child.wait();
        return Stopped::Killed;
    };
    let exited_within = |child: &mut Child, d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    for (signal, wait, outcome) in [
        (Signal::INT, grace, Stopped::Interrupted),
        (Signal::TERM, Duration::from_secs(5), Stopped::Terminated),
    ] {
        let _ = kill_process_group(pgid, signal);
        if exited_within(child, wait) {
            return outcome;
        }
    }
    let _ = kill_process_group(pgid, Signal::KILL);
    let _ = child.kill();
    let _ = child.wait();
    Stopped::Killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_that_ignores_sigint_is_terminated() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' INT; sleep 30 & wait"]);
        let mut child = own_group(&mut cmd).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        assert_eq!(
            stop_group(&mut child, Duration::from_millis(300)),
            Stopped::Terminated
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut child = own_group(&mut cmd).spawn().unwrap();
        assert_eq!(
            stop_group(&mut child, Duration::from_secs(2)),
            Stopped::Interrupted
        );
    }
}
