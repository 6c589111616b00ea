//! `--perf-control CTL,ACK`: lets `perf stat` count a run's measured window alone.
//!
//! A run spends more, and less evenly, on connecting its clients than on the rounds it measures,
//! so counts of a whole run say little about a round. `perf stat -D -1 --control fifo:CTL,ACK`
//! starts with its counters off and turns them on and off when told so through the FIFO `CTL`,
//! answering `ack` on `ACK`. Given the same two paths, loadgen tells it `enable` where its
//! measured window starts and `disable` where it ends, and waits for each answer, so that the
//! counters hold the window and nothing else. The option may be given more than once: one
//! `perf stat` attached to the server and one around loadgen. `crates/loadgen/profile.sh` uses
//! both:
//!
//! ```text
//! mkfifo ctl ack
//! perf stat -D -1 --control fifo:ctl,ack -e task-clock,raw_syscalls:sys_enter -p "$SERVER" &
//! target/release/loadgen ws-fanout --url ws://127.0.0.1:3001/ws --perf-control ctl,ack
//! ```
//!
//! `perf record -g -D -1 --control fifo:ctl,ack -p "$SERVER"` takes the same commands: a profile
//! of the rounds alone, as the capacity chapter's of echo-ws's room.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// How long perf may take to answer. It answers within milliseconds; a perf that died must not
/// keep the run waiting.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// One `perf stat`'s control FIFO and its answer FIFO.
#[derive(Debug, Clone)]
pub(crate) struct Fifos {
    control: PathBuf,
    ack: PathBuf,
}

/// `CTL,ACK`, as perf's own `--control fifo:CTL,ACK` spells the pair.
pub(crate) fn parse_fifos(text: &str) -> Result<Fifos, String> {
    match text.split_once(',') {
        Some((control, ack)) if !control.is_empty() && !ack.is_empty() => Ok(Fifos {
            control: control.into(),
            ack: ack.into(),
        }),
        _ => Err(format!("{text:?} is not CTL,ACK (two FIFO paths)")),
    }
}

/// Turns every attached `perf stat`'s counters on where a measured window starts.
pub(crate) fn enable(all: &[Fifos]) -> std::io::Result<()> {
    all.iter()
        .try_for_each(|fifos| fifos.tell("enable", ANSWER_WITHIN))
}

/// Turns them off where the window ends.
pub(crate) fn disable(all: &[Fifos]) -> std::io::Result<()> {
    all.iter()
        .try_for_each(|fifos| fifos.tell("disable", ANSWER_WITHIN))
}

// ANCHOR: tell
impl Fifos {
    /// Writes `command` and waits for perf's `ack`, for at most `within`. It blocks the calling thread for the
    /// milliseconds perf takes: the scenarios call it between rounds, when nothing is in flight.
    fn tell(&self, command: &str, within: Duration) -> std::io::Result<()> {
        // Both opened for reading and writing, as perf opens them: on Linux such an open never
        // waits for the other end, so a perf that is gone costs the timeout below, not a hang.
        let mut ack = OpenOptions::new().read(true).write(true).open(&self.ack)?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.control)?
            .write_all(format!("{command}\n").as_bytes())?;
        let timeout = rustix::event::Timespec::try_from(within).expect("a short timeout");
        let mut fds = [rustix::event::PollFd::new(
            &ack,
            rustix::event::PollFlags::IN,
        )];
        if rustix::event::poll(&mut fds, Some(&timeout))? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "perf did not answer {command:?} on {} within {within:?}",
                    self.ack.display()
                ),
            ));
        }
        let mut answer = [0u8; 16];
        let read = ack.read(&mut answer)?;
        if !answer[..read].starts_with(b"ack") {
            return Err(std::io::Error::other(format!(
                "perf answered {command:?} with {:?}",
                String::from_utf8_lossy(&answer[..read])
            )));
        }
        Ok(())
    }
}
// ANCHOR_END: tell

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_are_two_paths() {
        let fifos = parse_fifos("/tmp/ctl,/tmp/ack").expect("two paths");
        assert_eq!(fifos.control, PathBuf::from("/tmp/ctl"));
        assert_eq!(fifos.ack, PathBuf::from("/tmp/ack"));
        for wrong in ["/tmp/ctl", ",/tmp/ack", "/tmp/ctl,", ""] {
            assert!(parse_fifos(wrong).is_err(), "{wrong:?}");
        }
    }

    /// A stand-in for perf on the other end of two real FIFOs: it answers `ack` to each
    /// command, and a perf that never answers is an error after the timeout, not a hang.
    #[test]
    fn each_command_waits_for_perf_to_answer() {
        let dir = std::env::temp_dir().join(format!("loadgen-perf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let (control, ack) = (dir.join("ctl"), dir.join("ack"));
        for path in [&control, &ack] {
            let _ = std::fs::remove_file(path);
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                path,
                rustix::fs::Mode::from_raw_mode(0o600),
            )
            .expect("mkfifo");
        }
        let fifos = Fifos {
            control: control.clone(),
            ack: ack.clone(),
        };
        // As perf does: both FIFOs open for reading and writing, so no open blocks.
        let mut perf_control = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&control)
            .expect("control FIFO");
        let mut perf_ack = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&ack)
            .expect("ack FIFO");
        let perf = std::thread::spawn(move || {
            let mut heard = Vec::new();
            for _ in 0..2 {
                let mut command = [0u8; 16];
                let read = perf_control.read(&mut command).expect("a command");
                heard.push(String::from_utf8_lossy(&command[..read]).into_owned());
                perf_ack.write_all(b"ack\n").expect("an answer");
            }
            heard
        });
        enable(std::slice::from_ref(&fifos)).expect("enabled");
        disable(std::slice::from_ref(&fifos)).expect("disabled");
        assert_eq!(perf.join().expect("perf"), ["enable\n", "disable\n"]);

        // A perf that is gone: nobody holds either FIFO open.
        let within = Duration::from_millis(100);
        let started = std::time::Instant::now();
        let error = fifos.tell("enable", within).expect_err("no answer");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= within);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
