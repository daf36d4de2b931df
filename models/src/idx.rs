//! IDX files (the MNIST container format): a reader for u8 arrays of any rank.
//!
//! Layout: two zero bytes, a dtype code (0x08 = u8), a rank byte, one big-endian u32 per
//! dimension, then the elements in row-major order. Files may be plain or gzip-compressed;
//! compression is detected from the gzip magic bytes, not from the file name, so a
//! decompressed copy with a `.gz` name (or the reverse) still reads.
//!
//! This module owns parsing only: it returns raw `u8` arrays and their dimensions.
//! Normalisation, batching and dataset layout live in [`crate::data`]. Malformed input of
//! any kind is an [`IdxError`] naming the file, never a panic, and the header is never
//! trusted to size an allocation (a crafted header could ask for terabytes): the size it
//! declares is checked against the memory budget, and reading (and decompressing) stops
//! just past it.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

/// The IDX dtype code for unsigned bytes, the only element type MNIST-style data uses.
const DTYPE_U8: u8 = 0x08;

/// gzip streams start with these two bytes (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Everything that can go wrong reading an IDX file. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("{}: I/O error: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: gzip stream is corrupt or truncated: {source}", path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: file is {len} bytes, shorter than the {needed}-byte IDX header", path.display())]
    TruncatedHeader {
        path: PathBuf,
        len: usize,
        needed: usize,
    },
    #[error(
        "{}: bad IDX magic {found:02x?}: expected two zero bytes, a dtype code and a rank",
        path.display()
    )]
    BadMagic { path: PathBuf, found: [u8; 4] },
    #[error(
        "{}: IDX dtype code 0x{code:02x} ({name}) is not supported; only 0x08 (u8) is",
        path.display()
    )]
    UnsupportedDtype {
        path: PathBuf,
        code: u8,
        name: &'static str,
    },
    #[error("{}: IDX rank is 0; expected at least one dimension", path.display())]
    ZeroRank { path: PathBuf },
    #[error("{}: IDX dimensions {dims:?} overflow the address space", path.display())]
    DimsOverflow { path: PathBuf, dims: Vec<usize> },
    #[error(
        "{}: truncated data: dimensions {dims:?} need {expected} bytes, found {found}",
        path.display()
    )]
    TruncatedData {
        path: PathBuf,
        dims: Vec<usize>,
        expected: usize,
        found: usize,
    },
    /// `extra` is counted up to [`TRAILING_PEEK`] (1 MiB): reading stops there.
    #[error(
        "{}: {extra} bytes of trailing data after the {expected} bytes that dimensions {dims:?} need",
        path.display()
    )]
    TrailingData {
        path: PathBuf,
        dims: Vec<usize>,
        expected: usize,
        extra: usize,
    },
    /// The header declares more data than the memory budget allows.
    #[error("{}: {msg}", path.display())]
    OverBudget { path: PathBuf, msg: String },
    #[error("{}: expected a rank-{expected} IDX array, found dimensions {dims:?}", path.display())]
    WrongRank {
        path: PathBuf,
        expected: usize,
        dims: Vec<usize>,
    },
}

/// A dense u8 array read from an IDX file, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first (`[n, rows, cols]` for images, `[n]` for labels).
    pub dims: Vec<usize>,
    /// `dims.iter().product()` elements, row-major.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// The number of items along the first dimension.
    pub fn len(&self) -> usize {
        self.dims[0]
    }

    /// True if the first dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How many bytes past the declared data are read to report trailing data: enough to
/// count a few stray bytes exactly, never the rest of a decompression bomb.
const TRAILING_PEEK: u64 = 1 << 20;

/// Reads an IDX file, gzip-compressed or plain.
///
/// The file is streamed: the header is read first, the data size it declares is checked
/// (overflow, then the memory budget, [`crate::budget`]), and decompression stops just past
/// that size. A 3 MB gzip file that inflates to gigabytes behind a small header costs at
/// most the header's size plus [`TRAILING_PEEK`].
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray, IdxError> {
    let path = path.as_ref();
    let io_err = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufReader::new(fs::File::open(path).map_err(io_err)?);
    let gzip = file.fill_buf().map_err(io_err)?.starts_with(&GZIP_MAGIC);
    if gzip {
        // The decoder checks the gzip trailer (CRC32 and length) when it reaches the end
        // of the stream, which `read_array` does unless the data runs past the header's
        // size: a truncated or bit-flipped stream is an error rather than short data.
        read_array(GzDecoder::new(file), path, true)
    } else {
        read_array(file, path, false)
    }
}

/// Reads an IDX file and checks that it has the given rank.
pub fn read_idx_rank(path: impl AsRef<Path>, rank: usize) -> Result<IdxArray, IdxError> {
    let path = path.as_ref();
    let array = read_idx(path)?;
    if array.dims.len() != rank {
        return Err(IdxError::WrongRank {
            path: path.to_path_buf(),
            expected: rank,
            dims: array.dims,
        });
    }
    Ok(array)
}

/// Parses uncompressed IDX bytes; `path` is used only to name the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, IdxError> {
    read_array(bytes, path, false)
}

/// Reads as much of `r` as the header says, and a little more to detect trailing data.
/// `gzip` says whether a read error is the stream's fault (corrupt) or the file's (I/O).
fn read_array(mut r: impl Read, path: &Path, gzip: bool) -> Result<IdxArray, IdxError> {
    let path_buf = || path.to_path_buf();
    let read_err = |source: std::io::Error| {
        if gzip {
            IdxError::Gzip {
                path: path_buf(),
                source,
            }
        } else {
            IdxError::Io {
                path: path_buf(),
                source,
            }
        }
    };
    let mut head = Vec::with_capacity(4);
    (&mut r).take(4).read_to_end(&mut head).map_err(read_err)?;
    let Some(magic) = head.first_chunk::<4>() else {
        return Err(IdxError::TruncatedHeader {
            path: path_buf(),
            len: head.len(),
            needed: 4,
        });
    };
    let magic = *magic;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(IdxError::BadMagic {
            path: path_buf(),
            found: magic,
        });
    }
    let code = magic[2];
    if code != DTYPE_U8 {
        return Err(IdxError::UnsupportedDtype {
            path: path_buf(),
            code,
            name: dtype_name(code),
        });
    }
    let rank = usize::from(magic[3]);
    if rank == 0 {
        return Err(IdxError::ZeroRank { path: path_buf() });
    }
    let header_len = 4 + 4 * rank;
    (&mut r)
        .take(4 * rank as u64)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    if head.len() < header_len {
        return Err(IdxError::TruncatedHeader {
            path: path_buf(),
            len: head.len(),
            needed: header_len,
        });
    }
    let dims: Vec<usize> = head[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = match crate::budget::check_shape(&"the IDX data", &dims, 1) {
        Ok(n) => n,
        Err(crate::error::ModelError::Budget(msg)) if crate::budget::numel(&dims).is_some() => {
            return Err(IdxError::OverBudget {
                path: path_buf(),
                msg,
            })
        }
        Err(_) => {
            return Err(IdxError::DimsOverflow {
                path: path_buf(),
                dims,
            })
        }
    };
    // Grows with what is actually read, so a header that lies costs nothing up front.
    let mut body = Vec::new();
    r.take(expected as u64 + TRAILING_PEEK)
        .read_to_end(&mut body)
        .map_err(read_err)?;
    if body.len() < expected {
        return Err(IdxError::TruncatedData {
            path: path_buf(),
            dims,
            expected,
            found: body.len(),
        });
    }
    if body.len() > expected {
        // Trailing bytes mean the header and the data disagree; better to stop than to
        // guess which one is right.
        return Err(IdxError::TrailingData {
            path: path_buf(),
            dims,
            expected,
            extra: body.len() - expected,
        });
    }
    Ok(IdxArray { dims, data: body })
}

/// Encodes a u8 array as IDX bytes (uncompressed). Used to write test fixtures and small
/// derived files; the inverse of [`parse_idx`].
///
/// # Panics
/// If `dims` is empty, has more than 255 entries, a dimension exceeds `u32::MAX`, or the
/// product of `dims` differs from `data.len()`: these are caller bugs, not input errors.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    assert!(
        !dims.is_empty() && dims.len() <= 255,
        "IDX rank must be 1..=255"
    );
    assert_eq!(
        dims.iter().product::<usize>(),
        data.len(),
        "IDX dims and data length disagree"
    );
    let mut out = vec![0, 0, DTYPE_U8, dims.len() as u8];
    for &d in dims {
        let d = u32::try_from(d).expect("IDX dimension exceeds u32");
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// The IDX spec's names for its dtype codes, for error messages.
fn dtype_name(code: u8) -> &'static str {
    match code {
        0x08 => "u8",
        0x09 => "i8",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        0x0e => "f64",
        _ => "unknown",
    }
}
