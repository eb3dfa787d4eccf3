//! Write-ahead-log records and segments.
//!
//! A record is `payload length: u32 LE | CRC-32 of payload: u32 LE | payload`, with payload
//! `op: u8 (1 = put, 2 = delete) | revision: u64 LE | key length: u32 LE | key | value`
//! (the value, put only, runs to the end of the payload). The CRC catches torn and corrupted
//! records.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::disk::{DiskError, segment_name, sync_dir};
use super::state::Mutation;
use crate::Rev;

const HEADER_BYTES: usize = 8;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
/// Fixed part of a payload: op, revision and key length.
const PAYLOAD_FIXED_BYTES: usize = 1 + 8 + 4;
/// Anything longer cannot have been written by the store (keys and values are capped far
/// below), so such a length is garbage.
const MAX_PAYLOAD_BYTES: usize = 1 << 30;
/// The largest value a record can carry; the store's value limit must stay below it, or a
/// written record would be rejected as garbage on recovery.
pub(crate) const MAX_RECORD_VALUE_BYTES: usize =
    MAX_PAYLOAD_BYTES - PAYLOAD_FIXED_BYTES - crate::MAX_KEY_BYTES;

/// One decoded record.
#[derive(Clone, Debug)]
pub(crate) struct WalRecord {
    pub rev: Rev,
    pub mutation: Mutation,
}

/// Appends the encoding of `mutation` at `rev` to `buf`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, rev: Rev, mutation: &Mutation) {
    let (op, key, value): (u8, &str, &[u8]) = match mutation {
        Mutation::Put { key, value } => (OP_PUT, key, value),
        Mutation::Delete { key } => (OP_DELETE, key, &[]),
    };
    let payload_len = PAYLOAD_FIXED_BYTES + key.len() + value.len();
    let start = buf.len();
    // Both lengths were validated against MAX_KEY_BYTES and the value limit before the
    // request reached the writer, so they fit in u32.
    buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(op);
    buf.extend_from_slice(&rev.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(value);
    let crc = crc32fast::hash(&buf[start + HEADER_BYTES..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The result of decoding at one offset.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A valid record and its encoded length.
    Record(WalRecord, usize),
    /// Clean end of data.
    End,
    /// Torn or corrupt bytes; the reason says which check failed.
    Invalid(String),
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes the record at the start of `bytes`.
pub(crate) fn decode_record(bytes: &[u8]) -> Decoded {
    if bytes.is_empty() {
        return Decoded::End;
    }
    let (Some(payload_len), Some(crc)) = (read_u32(bytes, 0), read_u32(bytes, 4)) else {
        return Decoded::Invalid(format!(
            "{} stray bytes, shorter than a header",
            bytes.len()
        ));
    };
    let payload_len = payload_len as usize;
    if !(PAYLOAD_FIXED_BYTES..=MAX_PAYLOAD_BYTES).contains(&payload_len) {
        return Decoded::Invalid(format!("impossible record length {payload_len}"));
    }
    let Some(payload) = bytes.get(HEADER_BYTES..HEADER_BYTES + payload_len) else {
        return Decoded::Invalid(format!(
            "record of {payload_len} bytes is cut off after {} bytes",
            bytes.len() - HEADER_BYTES
        ));
    };
    if crc32fast::hash(payload) != crc {
        return Decoded::Invalid("checksum mismatch".into());
    }
    // The checksum matched, so a malformed payload is a writer bug rather than a torn write;
    // it is still reported as invalid rather than trusted.
    let (Some(rev), Some(key_len)) = (read_u64(payload, 1), read_u32(payload, 9)) else {
        return Decoded::Invalid("payload too short".into());
    };
    let Some(key) = payload.get(PAYLOAD_FIXED_BYTES..PAYLOAD_FIXED_BYTES + key_len as usize) else {
        return Decoded::Invalid(format!("key length {key_len} exceeds the payload"));
    };
    let Ok(key) = std::str::from_utf8(key) else {
        return Decoded::Invalid("key is not UTF-8".into());
    };
    let value = &payload[PAYLOAD_FIXED_BYTES + key.len()..];
    let mutation = match payload[0] {
        OP_PUT => Mutation::Put {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(value),
        },
        OP_DELETE if value.is_empty() => Mutation::Delete {
            key: key.to_owned(),
        },
        op => return Decoded::Invalid(format!("unknown operation {op}")),
    };
    Decoded::Record(WalRecord { rev, mutation }, HEADER_BYTES + payload_len)
}

/// The records of one segment and where its valid part ends.
#[derive(Debug)]
pub(crate) struct SegmentScan {
    pub records: Vec<WalRecord>,
    /// Length of the valid prefix of the file.
    pub valid_len: u64,
    /// Total file length when read.
    pub file_len: u64,
    /// Why decoding stopped before the end of the file, if it did.
    pub invalid_tail: Option<String>,
}

/// Reads every valid record of a segment, stopping at the first invalid one.
pub(crate) fn scan_segment(path: &Path) -> Result<SegmentScan, DiskError> {
    let bytes = fs::read(path).map_err(|source| DiskError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut records = Vec::new();
    let mut offset = 0usize;
    let invalid_tail = loop {
        match decode_record(&bytes[offset..]) {
            Decoded::Record(record, len) => {
                records.push(record);
                offset += len;
            }
            Decoded::End => break None,
            Decoded::Invalid(reason) => break Some(reason),
        }
    };
    Ok(SegmentScan {
        records,
        valid_len: offset as u64,
        file_len: bytes.len() as u64,
        invalid_tail,
    })
}

/// Cuts a segment back to its valid prefix and makes that durable.
pub(crate) fn truncate_segment(path: &Path, valid_len: u64) -> Result<(), DiskError> {
    let truncate_err = |source| DiskError::Truncate {
        path: path.to_path_buf(),
        offset: valid_len,
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(truncate_err)?;
    file.set_len(valid_len).map_err(truncate_err)?;
    file.sync_all().map_err(truncate_err)
}

/// The segment the writer appends to.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    file: File,
    path: PathBuf,
    len: u64,
}

impl SegmentWriter {
    /// Creates `wal-<first_rev>.log` in `dir` and makes its directory entry durable, so that
    /// records synced into it later cannot vanish with the name.
    pub(crate) fn create(dir: &Path, first_rev: Rev) -> Result<Self, DiskError> {
        let path = dir.join(segment_name(first_rev));
        let file = match OpenOptions::new().create_new(true).append(true).open(&path) {
            Ok(file) => file,
            // An empty leftover of an earlier failed rotation can simply be reused; anything
            // with data in it must not be appended to from the wrong position.
            Err(e)
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && fs::metadata(&path).is_ok_and(|m| m.len() == 0) =>
            {
                OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|source| DiskError::OpenForWrite {
                        path: path.clone(),
                        source,
                    })?
            }
            Err(source) => return Err(DiskError::OpenForWrite { path, source }),
        };
        sync_dir(dir)?;
        Ok(SegmentWriter { file, path, len: 0 })
    }

    /// Reopens an existing segment whose valid length is `len` for appending.
    pub(crate) fn open_append(path: &Path, len: u64) -> Result<Self, DiskError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| DiskError::OpenForWrite {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(SegmentWriter {
            file,
            path: path.to_path_buf(),
            len,
        })
    }

    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<(), DiskError> {
        self.file
            .write_all(bytes)
            .map_err(|source| DiskError::Append {
                path: self.path.clone(),
                source,
            })?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// `fdatasync`: the data and the file length reach the disk.
    pub(crate) fn sync(&mut self) -> Result<(), DiskError> {
        self.file.sync_data().map_err(|source| DiskError::Sync {
            path: self.path.clone(),
            source,
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut buf = Vec::new();
        encode_record(
            &mut buf,
            7,
            &Mutation::Put {
                key: "a/b".into(),
                value: Bytes::from_static(b"hello"),
            },
        );
        encode_record(&mut buf, 8, &Mutation::Delete { key: "a/b".into() });
        buf
    }

    #[test]
    fn records_round_trip() {
        let buf = sample();
        let Decoded::Record(first, len) = decode_record(&buf) else {
            panic!("first record")
        };
        assert_eq!(first.rev, 7);
        assert!(
            matches!(&first.mutation, Mutation::Put { key, value } if key == "a/b" && value == "hello")
        );
        let Decoded::Record(second, len2) = decode_record(&buf[len..]) else {
            panic!("second")
        };
        assert_eq!(second.rev, 8);
        assert!(matches!(&second.mutation, Mutation::Delete { key } if key == "a/b"));
        assert!(matches!(decode_record(&buf[len + len2..]), Decoded::End));
    }

    #[test]
    fn torn_and_flipped_records_are_invalid() {
        let buf = sample();
        for cut in 1..buf.len() {
            let Decoded::Record(_, len) = decode_record(&buf) else {
                panic!()
            };
            if cut == len {
                continue;
            }
            let tail = &buf[..cut];
            let decoded = if cut > len {
                decode_record(&tail[len..])
            } else {
                decode_record(tail)
            };
            assert!(
                matches!(decoded, Decoded::Invalid(_)),
                "cut at {cut} decoded as valid"
            );
        }
        for position in 0..buf.len() {
            let mut flipped = buf.clone();
            flipped[position] ^= 0x40;
            let mut offset = 0;
            let mut valid = 0;
            while let Decoded::Record(_, len) = decode_record(&flipped[offset..]) {
                offset += len;
                valid += 1;
            }
            assert!(valid < 2, "flip at byte {position} went unnoticed");
        }
    }
}
