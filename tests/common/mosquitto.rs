//! Debian's real Mosquitto broker (`/usr/sbin/mosquitto`) for the tests that talk to it: on a
//! free 127.0.0.1 port, with its own config file in a temp dir, started and stopped by PID
//! (SIGTERM lets it write its persistence file), and restartable on the same port. Its output
//! is kept for failure messages. Killed when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

pub struct Mosquitto {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Mosquitto {
    /// Starts Mosquitto with `extra` config lines after its `listener` line (add
    /// `allow_anonymous true` for an open broker). Persistence goes to its temp dir when
    /// `extra` turns it on.
    pub fn start(extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        // A free port: bound by us, then released for mosquitto (it may be taken in between;
        // then mosquitto exits and the wait in `spawn` says so).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\npersistence_location {}/\nlog_dest stderr\n\
                 log_type all\n{extra}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut m = Mosquitto {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            conf,
        };
        m.spawn();
        m
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// Everything it printed, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start /usr/sbin/mosquitto (Debian package mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_err() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("mosquitto exited with {st}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto does not listen on {}\n{}",
                self.addr,
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Stops it by PID with SIGTERM (it saves its persistence file) and waits (≤ 10 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mosquitto did not stop within 10 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again on the same port and config.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Waits (≤ `timeout`) for a line of its output containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
