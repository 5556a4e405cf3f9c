//! A newc ("070701") cpio writer: the initramfs format Linux unpacks.
//!
//! Written here rather than staged on disk and packed with `cpio(1)`:
//! device nodes such as `/dev/console` need no root or mknod, parent
//! directories are added on the way, and the output is deterministic
//! (sorted, mtime 0) so an unchanged image compares equal.
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

enum Entry {
    Dir(u32),
    File { src: Source, mode: u32 },
    Symlink(String),
    CharDev { mode: u32, major: u32, minor: u32 },
}

enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// An initramfs being assembled: archive path (no leading '/') to entry.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl Archive {
    fn parents(&mut self, path: &str) {
        let mut cur = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            self.entries.entry(cur.clone()).or_insert(Entry::Dir(0o755));
        }
    }

    pub fn dir(&mut self, path: &str) {
        let p = clean(path);
        self.parents(&p);
        self.entries.entry(p).or_insert(Entry::Dir(0o755));
    }

    /// Adds the file at `src` (symlinks followed), keeping its permissions.
    pub fn file(&mut self, path: &str, src: &Path) -> Result<()> {
        let meta = fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
        let p = clean(path);
        self.parents(&p);
        self.entries.insert(
            p,
            Entry::File {
                src: Source::Path(src.to_path_buf()),
                mode: meta.permissions().mode() & 0o7777,
            },
        );
        Ok(())
    }

    pub fn bytes(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        let p = clean(path);
        self.parents(&p);
        self.entries.insert(
            p,
            Entry::File {
                src: Source::Bytes(data.into()),
                mode,
            },
        );
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let p = clean(path);
        self.parents(&p);
        self.entries.insert(p, Entry::Symlink(target.to_string()));
    }

    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        let p = clean(path);
        self.parents(&p);
        self.entries
            .insert(p, Entry::CharDev { mode, major, minor });
    }

    /// Adds a host directory tree at `path`, symlinks kept as symlinks.
    pub fn tree(&mut self, path: &str, src: &Path) -> Result<()> {
        self.dir(path);
        let mut names: Vec<_> = fs::read_dir(src)
            .with_context(|| format!("reading {}", src.display()))?
            .collect::<std::io::Result<_>>()?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let name = e.file_name().to_string_lossy().into_owned();
            let at = format!("{}/{name}", clean(path));
            let ft = e.file_type()?;
            if ft.is_symlink() {
                let t = fs::read_link(e.path())?;
                self.symlink(&at, &t.to_string_lossy());
            } else if ft.is_dir() {
                self.tree(&at, &e.path())?;
            } else {
                self.file(&at, &e.path())?;
            }
        }
        Ok(())
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&clean(path))
    }

    /// The archive bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (ino, (name, entry)) in self.entries.iter().enumerate() {
            let ino = ino as u32 + 1;
            match entry {
                Entry::Dir(mode) => header(&mut out, ino, 0o040000 | mode, 2, 0, (0, 0), name, &[]),
                Entry::File { src, mode } => {
                    let data = match src {
                        Source::Path(p) => {
                            fs::read(p).with_context(|| format!("reading {}", p.display()))?
                        }
                        Source::Bytes(b) => b.clone(),
                    };
                    header(
                        &mut out,
                        ino,
                        0o100000 | mode,
                        1,
                        data.len(),
                        (0, 0),
                        name,
                        &data,
                    )
                }
                Entry::Symlink(t) => header(
                    &mut out,
                    ino,
                    0o120777,
                    1,
                    t.len(),
                    (0, 0),
                    name,
                    t.as_bytes(),
                ),
                Entry::CharDev { mode, major, minor } => header(
                    &mut out,
                    ino,
                    0o020000 | mode,
                    1,
                    0,
                    (*major, *minor),
                    name,
                    &[],
                ),
            }
        }
        header(&mut out, 0, 0, 1, 0, (0, 0), "TRAILER!!!", &[]);
        Ok(out)
    }
}

#[allow(clippy::too_many_arguments)]
fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_sorted_and_padded() {
        let mut a = Archive::default();
        a.bytes("/etc/rig/hello", 0o644, b"hi\n".to_vec());
        a.symlink("bin/sh", "busybox");
        a.char_dev("dev/console", 0o600, 5, 1);
        let out = a.encode().unwrap();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        // Parents come before children; the trailer is last.
        let pos = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(pos("etc\0") < pos("etc/rig\0"));
        assert!(pos("etc/rig\0") < pos("etc/rig/hello\0"));
        let last = text.rfind("070701").unwrap();
        assert_eq!(&text[last + 110..last + 121], "TRAILER!!!\0");
        // The console node carries its device numbers (rdevmajor 5, minor 1).
        let hdr = &text[pos("dev/console\0") - 110..pos("dev/console\0")];
        assert_eq!(&hdr[..6], "070701");
        assert_eq!(&hdr[14..22], "00002180"); // S_IFCHR (0o020000) | 0o600
        assert_eq!(&hdr[78..86], "00000005");
        assert_eq!(&hdr[86..94], "00000001");
    }
}
