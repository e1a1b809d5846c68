//! Writing a target's key and chain so that a TLS server never reads half a file and nobody
//! else gets to choose where they go: each file is written to a temporary file created
//! exclusively in the same directory, flushed to disk, renamed over the target, and the
//! directory flushed. A target that is a symlink, is not a regular file, or sits in a
//! directory others may write to (where anyone could swap it) is refused before anything is
//! written.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use zeroize::Zeroizing;

/// Files larger than this are not read back (a key and a chain are a few KiB).
const MAX_FILE: u64 = 1024 * 1024;

/// The target's path in its real directory, or why the agent must not write it: the target
/// is a symlink or not a regular file, or a directory on its way (the directory it is in, or
/// one that holds a component of its path, as the path is given and as it resolves) belongs
/// to another user or may be written by others (a group or everyone; a sticky directory such
/// as `/tmp` is let through on the way, never as the target's own), where someone could swap
/// it.
pub fn check_target(path: &Path) -> anyhow::Result<PathBuf> {
    // A relative path's last ancestor is the empty path, which names no directory.
    let path =
        &std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    let dir = path
        .parent()
        .with_context(|| format!("{} has no directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let real_dir = std::fs::canonicalize(dir)
        .with_context(|| format!("the directory of {} ({})", path.display(), dir.display()))?;
    let me = effective_uid();
    let mut checked = std::collections::HashSet::new();
    for given in dir.ancestors() {
        let real = std::fs::canonicalize(given)
            .with_context(|| format!("resolving {}", given.display()))?;
        for d in real.ancestors() {
            if checked.insert(d.to_path_buf()) {
                safe_directory(d, d == real_dir, me, path)?;
            }
        }
    }
    let target = real_dir.join(name);
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.file_type().is_symlink() => bail!("{} is a symlink: refused", path.display()),
        Ok(m) if !m.is_file() => bail!("{} is not a regular file: refused", path.display()),
        Ok(_) => Ok(target),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(target),
        Err(e) => Err(e).with_context(|| format!("looking at {}", path.display())),
    }
}

fn effective_uid() -> u32 {
    // /proc/self belongs to the process's effective uid.
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

fn safe_directory(dir: &Path, own: bool, me: u32, target: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir).with_context(|| format!("looking at {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if meta.uid() != 0 && meta.uid() != me {
        bail!(
            "{} belongs to another user (uid {}): refusing to write {}",
            dir.display(),
            meta.uid(),
            target.display()
        );
    }
    let mode = meta.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && (own || !sticky) {
        bail!(
            "{} may be written by others (mode {:o}): anyone who can could swap {} there",
            dir.display(),
            mode & 0o7777,
            target.display()
        );
    }
    Ok(())
}

/// What a target file holds now (`None`: there is none), in a zeroizing buffer: it may be a
/// private key.
pub fn read(path: &Path) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    let path = &check_target(path)?;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let len = file.metadata()?.len();
    if len > MAX_FILE {
        bail!("{} is larger than {MAX_FILE} bytes", path.display());
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len as usize + 1));
    use std::io::Read as _;
    file.take(MAX_FILE).read_to_end(&mut out)?;
    Ok(Some(out))
}

/// Replaces `path` with `bytes` (mode `mode`) atomically.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let path = &check_target(path)?;
    let dir = path.parent().context("no directory")?;
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let tmp = dir.join(format!(
        ".{name}.csrd-agent-{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // Exactly `mode`, whatever the umask took away.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("flushing {}", dir.display()))?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Puts `previous` back at `path` (mode `mode`), or removes `path` when there was nothing.
pub fn restore(path: &Path, previous: Option<&[u8]>, mode: u32) -> anyhow::Result<()> {
    match previous {
        Some(bytes) => write_atomic(path, bytes, mode),
        None => match std::fs::remove_file(check_target(path)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(mode: u32) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("csrd-agent-files-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    #[test]
    fn files_are_replaced_whole_with_their_mode_and_leave_no_temporary_behind() {
        let d = dir(0o755);
        let key = d.join("tls.key");
        write_atomic(&key, b"one", 0o600).unwrap();
        write_atomic(&key, b"two", 0o600).unwrap();
        assert_eq!(&*read(&key).unwrap().unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let chain = d.join("fullchain.pem");
        write_atomic(&chain, b"c", 0o644).unwrap();
        assert_eq!(
            std::fs::metadata(&chain).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            2,
            "no temporary left"
        );
        restore(&key, None, 0o600).unwrap();
        assert!(read(&key).unwrap().is_none());
        restore(&key, Some(b"back"), 0o600).unwrap();
        assert_eq!(&*read(&key).unwrap().unwrap(), b"back");
    }

    #[test]
    fn symlinks_and_world_writable_directories_are_refused() {
        let d = dir(0o755);
        let elsewhere = d.join("elsewhere");
        std::fs::write(&elsewhere, b"x").unwrap();
        let link = d.join("tls.key");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let e = write_atomic(&link, b"key", 0o600).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert_eq!(
            std::fs::read(&elsewhere).unwrap(),
            b"x",
            "nothing written through it"
        );
        for mode in [0o777, 0o775, 0o1777] {
            let open = dir(mode);
            let e = write_atomic(&open.join("tls.key"), b"key", 0o600)
                .unwrap_err()
                .to_string();
            assert!(e.contains("may be written by others"), "{mode:o}: {e}");
            assert!(std::fs::read_dir(&open).unwrap().next().is_none());
        }
    }

    #[test]
    fn a_directory_on_the_way_that_others_may_write_is_refused_through_symlinks_too() {
        // others/tls is safe itself, but others/ (group-writable) lets its group swap tls.
        let others = dir(0o775);
        let tls = others.join("tls");
        std::fs::create_dir(&tls).unwrap();
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = write_atomic(&tls.join("k"), b"key", 0o600)
            .unwrap_err()
            .to_string();
        assert!(e.contains("may be written by others"), "{e}");
        // A safe-looking path that resolves into it is refused the same way.
        let safe = dir(0o755);
        std::os::unix::fs::symlink(&tls, safe.join("tls")).unwrap();
        let e = write_atomic(&safe.join("tls/k"), b"key", 0o600)
            .unwrap_err()
            .to_string();
        assert!(e.contains("may be written by others"), "{e}");
        // A sticky directory on the way (/tmp) is fine.
        let sticky = dir(0o1777);
        let mine = sticky.join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o700)).unwrap();
        write_atomic(&mine.join("k"), b"key", 0o600).unwrap();
    }
}
