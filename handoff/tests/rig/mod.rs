//! In-process handoffs without privileges: a private directory, an old side
//! serving in a thread, descriptor counts.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use handover_handoff::{Address, Callbacks, FdKind, Offer};

/// Tests of one binary share the descriptor table: they take turns.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The timeout of every wait in these tests.
pub const STEP: Duration = Duration::from_millis(300);

/// A 0700 directory with a listening Unix socket `admin.sock` and a pipe: the
/// descriptors an old side offers.
pub struct Rig {
    dir: PathBuf,
    pub admin: UnixListener,
    pub pipe: (std::io::PipeReader, std::io::PipeWriter),
}

impl Rig {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "handoff-rig-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let admin = UnixListener::bind(dir.join("admin.sock")).unwrap();
        Self {
            dir,
            admin,
            pipe: std::io::pipe().unwrap(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn address(&self) -> Address {
        Address::Path(self.dir.join("handoff.sock"))
    }

    pub fn offer(&self) -> Offer {
        let mut offer = Offer::new("rig old");
        offer.add("admin", FdKind::Listener, &self.admin).unwrap();
        offer.add("state", FdKind::Other, &self.pipe.0).unwrap();
        offer.set_extra(serde_json::json!({"generation": 1}));
        offer
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Records the callbacks in order; refuses to quiesce when `refuse` is set.
#[derive(Clone, Default)]
pub struct Recorder {
    pub calls: Arc<Mutex<Vec<&'static str>>>,
    pub refuse: Option<String>,
}

impl Recorder {
    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }
}

impl Callbacks for Recorder {
    fn on_quiesce(&mut self) -> Result<(), String> {
        self.calls.lock().unwrap().push("quiesce");
        match &self.refuse {
            Some(r) => Err(r.clone()),
            None => Ok(()),
        }
    }

    fn on_resume(&mut self) {
        self.calls.lock().unwrap().push("resume");
    }
}
