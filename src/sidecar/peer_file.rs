//! Replacing the peer watch file atomically.
//!
//! The Supervisor polls the file every second and terminates on a line it cannot resolve, so it
//! must never see a half-written file: the content goes to a temporary file in the same directory
//! (same filesystem, so the rename is atomic), is fsynced, and is renamed over the old one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct PeerFile {
    path: PathBuf,
    current: Option<String>,
}

impl PeerFile {
    /// Remembers what is already there, so a restarted sidecar does not rewrite the same content.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let current = fs::read_to_string(&path).ok();
        Self { path, current }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file hold `content`; `Ok(false)` when it already did (nothing written).
    pub fn update(&mut self, content: &str) -> io::Result<bool> {
        if self.current.as_deref() == Some(content) {
            return Ok(false);
        }
        // A blank line terminates the Supervisor: refuse it whatever the caller computed.
        if content.lines().any(|line| line.trim().is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "refusing to write a blank line into the peer watch file",
            ));
        }
        write_atomically(&self.path, content.as_bytes())?;
        self.current = Some(content.to_owned());
        Ok(true)
    }
}

fn write_atomically(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the peer watch file path has no file name")
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp.{}", std::process::id()));
    let temp = dir.join(temp_name);
    let written = File::create(&temp).and_then(|mut file| {
        file.write_all(content)?;
        file.sync_all()
    });
    if let Err(err) = written.and_then(|()| fs::rename(&temp, path)) {
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    // Persist the rename itself; an error here does not undo the replacement the reader sees.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}
