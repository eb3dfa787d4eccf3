//! Snapshots: the live keys at one revision, written atomically.
//!
//! Format: `"DPSNAP01" | revision: u64 LE | entry count: u64 LE | entries | CRC-32: u32 LE`,
//! entry = `key length: u32 LE | key | create_rev: u64 LE | mod_rev: u64 LE |
//! value length: u32 LE | value`. The trailing CRC covers everything before it.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::disk::{DiskError, TEMP_SUFFIX, snapshot_name, sync_dir};
use super::state::SnapshotEntry;
use crate::Rev;

const MAGIC: &[u8; 8] = b"DPSNAP01";

/// A writer that checksums what passes through it.
struct ChecksummedWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for ChecksummedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn encode_entries<W: Write>(
    out: &mut W,
    rev: Rev,
    entries: &[SnapshotEntry],
) -> std::io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&rev.to_le_bytes())?;
    out.write_all(&(entries.len() as u64).to_le_bytes())?;
    for entry in entries {
        out.write_all(&(entry.key.len() as u32).to_le_bytes())?;
        out.write_all(entry.key.as_bytes())?;
        out.write_all(&entry.create_rev.to_le_bytes())?;
        out.write_all(&entry.mod_rev.to_le_bytes())?;
        out.write_all(&(entry.value.len() as u32).to_le_bytes())?;
        out.write_all(&entry.value)?;
    }
    Ok(())
}

/// Writes `snapshot-<rev>.snap` in `dir` durably: temporary file, fsync, rename, fsync of the
/// directory. A crash at any point leaves either no snapshot or a complete one.
pub(crate) fn write_snapshot(
    dir: &Path,
    rev: Rev,
    entries: &[SnapshotEntry],
) -> Result<PathBuf, DiskError> {
    let path = dir.join(snapshot_name(rev));
    let temp = dir.join(format!("{}{TEMP_SUFFIX}", snapshot_name(rev)));
    let write_err = |source| DiskError::WriteSnapshot {
        path: temp.clone(),
        source,
    };
    let file = File::create(&temp).map_err(write_err)?;
    let mut out = ChecksummedWriter {
        inner: BufWriter::new(file),
        hasher: crc32fast::Hasher::new(),
    };
    encode_entries(&mut out, rev, entries).map_err(write_err)?;
    let crc = out.hasher.clone().finalize();
    out.inner.write_all(&crc.to_le_bytes()).map_err(write_err)?;
    let file = out
        .inner
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(|source| DiskError::Sync {
        path: temp.clone(),
        source,
    })?;
    fs::rename(&temp, &path).map_err(|source| DiskError::Rename {
        from: temp.clone(),
        to: path.clone(),
        source,
    })?;
    sync_dir(dir)?;
    Ok(path)
}

/// A bounds-checked reader over the snapshot bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Reads and verifies a snapshot; returns its revision and entries.
pub(crate) fn read_snapshot(path: &Path) -> Result<(Rev, Vec<SnapshotEntry>), DiskError> {
    let bytes = fs::read(path).map_err(|source| DiskError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |offset: usize, reason: &str| DiskError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.to_owned(),
    };
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err(corrupt(0, "too short to be a snapshot"));
    };
    let (body, crc) = bytes.split_at(body_len);
    let stored_crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != stored_crc {
        return Err(corrupt(body_len, "checksum mismatch"));
    }
    let mut cursor = Cursor { bytes: body, at: 0 };
    if cursor.take(MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(corrupt(0, "not a devplane snapshot"));
    }
    let (Some(rev), Some(count)) = (cursor.u64(), cursor.u64()) else {
        return Err(corrupt(cursor.at, "truncated header"));
    };
    let mut entries = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 20));
    let mut previous_key: Option<String> = None;
    for _ in 0..count {
        let entry_at = cursor.at;
        let entry = (|| {
            let key_len = cursor.u32()? as usize;
            let key = std::str::from_utf8(cursor.take(key_len)?).ok()?.to_owned();
            let create_rev = cursor.u64()?;
            let mod_rev = cursor.u64()?;
            let value_len = cursor.u32()? as usize;
            let value = Bytes::copy_from_slice(cursor.take(value_len)?);
            Some(SnapshotEntry {
                key,
                create_rev,
                mod_rev,
                value,
            })
        })()
        .ok_or_else(|| corrupt(entry_at, "malformed entry"))?;
        if entry.mod_rev > rev || entry.create_rev > entry.mod_rev {
            return Err(corrupt(
                entry_at,
                "entry revisions are inconsistent with the snapshot",
            ));
        }
        if previous_key
            .as_ref()
            .is_some_and(|previous| *previous >= entry.key)
        {
            return Err(corrupt(
                entry_at,
                "keys are not in strictly ascending order",
            ));
        }
        previous_key = Some(entry.key.clone());
        entries.push(entry);
    }
    if cursor.at != body.len() {
        return Err(corrupt(cursor.at, "trailing bytes after the last entry"));
    }
    Ok((rev, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<SnapshotEntry> {
        vec![
            SnapshotEntry {
                key: "a".into(),
                create_rev: 1,
                mod_rev: 3,
                value: Bytes::from_static(b"x"),
            },
            SnapshotEntry {
                key: "b".into(),
                create_rev: 2,
                mod_rev: 2,
                value: Bytes::new(),
            },
        ]
    }

    #[test]
    fn snapshots_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_snapshot(dir.path(), 5, &entries()).unwrap();
        assert_eq!(path.file_name().unwrap(), snapshot_name(5).as_str());
        let (rev, read) = read_snapshot(&path).unwrap();
        assert_eq!(rev, 5);
        assert_eq!(read, entries());
    }

    #[test]
    fn a_damaged_snapshot_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_snapshot(dir.path(), 5, &entries()).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_snapshot(&path),
            Err(DiskError::Corrupt { .. })
        ));
        fs::write(&path, &bytes[..10]).unwrap();
        assert!(matches!(
            read_snapshot(&path),
            Err(DiskError::Corrupt { .. })
        ));
    }
}
