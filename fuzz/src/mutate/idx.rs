//! Structure-aware mutation of IDX files (the MNIST container): header fields, data
//! length, gzip wrapping, and gzip bombs.
//!
//! A seed is decoded into (dtype, dims, data) when it is a plain IDX file; the edits set
//! the dtype byte, change the rank, set dims to 0 / 2^31 / 2^32−1 / large, cut or grow
//! the data, then re-encode, gzip-compressed or not. A bomb is a small gzip stream that
//! inflates far past its header's declared size (and past the memory budget): the reader
//! must stop at the size the header declares, not read to the end.

use std::io::Write;
use std::sync::OnceLock;

use flate2::{Compress, Compression, FlushCompress};
use qbench_models::rng::Rng;

use super::Draw;

/// Dim values that overflow element counts (products of u32 dims in usize/u32).
const DIMS: [u32; 9] = [0, 1, 2, 28, 65536, 1 << 31, u32::MAX, 60000, 1 << 16 | 1];

/// A decoded plain IDX file.
struct Idx {
    dtype: u8,
    dims: Vec<u32>,
    data: Vec<u8>,
}

fn decode(bytes: &[u8]) -> Option<Idx> {
    let (&[0, 0, dtype, rank], rest) = bytes.split_first_chunk::<4>()? else {
        return None;
    };
    let rank = rank as usize;
    let header = rest.get(..rank * 4)?;
    let dims = header
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(Idx {
        dtype,
        dims,
        data: rest[rank * 4..].to_vec(),
    })
}

fn encode(idx: &Idx) -> Vec<u8> {
    let mut out = vec![0, 0, idx.dtype, idx.dims.len() as u8];
    for d in &idx.dims {
        out.extend(d.to_be_bytes());
    }
    out.extend(&idx.data);
    out
}

/// gzip of `bytes` (a real stream, CRC and all).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
    z.write_all(bytes).expect("writing to a Vec");
    z.finish().expect("writing to a Vec")
}

/// Mutates `seed` (a plain IDX file; the seeds are) into `out`; returns the labels.
pub fn mutate(rng: &mut Rng, seed: &[u8], out: &mut Vec<u8>) -> Vec<String> {
    let Some(mut idx) = decode(seed) else {
        out.extend_from_slice(seed);
        return vec![super::bytes(rng, out)];
    };
    // Rare: each bomb inflates about half a GiB before the budget stops it (seconds).
    if rng.one_in(100) {
        let (bytes, label) = bomb(rng, &idx);
        out.extend(bytes);
        return vec![label];
    }
    let mut labels = Vec::new();
    for _ in 0..1 + rng.below(2) {
        labels.push(edit(rng, &mut idx));
    }
    let plain = encode(&idx);
    if rng.one_in(3) {
        out.extend(gzip(&plain));
        labels.push("gzip".into());
    } else {
        out.extend(plain);
    }
    if rng.one_in(6) {
        labels.push(super::bytes(rng, out));
    }
    labels
}

fn edit(rng: &mut Rng, idx: &mut Idx) -> String {
    match rng.below(6) {
        0 => {
            idx.dtype = [0x08, 0x09, 0x0b, 0x0c, 0x0d, 0x0e, 0x00, 0xff][rng.below(8)];
            format!("dtype {:#04x}", idx.dtype)
        }
        1 => {
            if idx.dims.is_empty() || rng.one_in(2) {
                let d = DIMS[rng.below(DIMS.len())];
                idx.dims.push(d);
                format!("rank +1 (dim {d})")
            } else {
                idx.dims.pop();
                "rank -1".into()
            }
        }
        2 => {
            idx.dims.clear();
            "rank 0".into()
        }
        3 if !idx.data.is_empty() => {
            let keep = rng.below(idx.data.len());
            idx.data.truncate(keep);
            format!("data cut to {keep} bytes")
        }
        4 => {
            let n = 1 + rng.below(64);
            idx.data.extend((0..n).map(|_| rng.next_u64() as u8));
            format!("{n} data bytes appended")
        }
        _ if !idx.dims.is_empty() => {
            let at = rng.below(idx.dims.len());
            idx.dims[at] = DIMS[rng.below(DIMS.len())];
            format!("dim {at} = {}", idx.dims[at])
        }
        _ => "rank 0 kept".into(),
    }
}

/// Raw deflate of 1 MiB of zeros ending in a full flush: a self-contained chunk that may
/// be repeated any number of times inside one deflate stream (a full flush resets the
/// window, so no copy refers back into another).
fn zero_chunk() -> &'static [u8] {
    static CHUNK: OnceLock<Vec<u8>> = OnceLock::new();
    CHUNK.get_or_init(|| deflate_full(&vec![0u8; 1 << 20]))
}

/// Raw deflate of `bytes`, ending in a full flush (non-final, byte-aligned).
fn deflate_full(bytes: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(bytes.len() / 100 + 1024);
    loop {
        let done = c.total_in() as usize;
        if out.capacity() - out.len() < 1024 {
            out.reserve(64 * 1024);
        }
        c.compress_vec(&bytes[done..], &mut out, FlushCompress::Full)
            .expect("deflating into a Vec");
        if c.total_in() as usize == bytes.len() && out.capacity() > out.len() {
            return out;
        }
    }
}

/// A gzip stream: the IDX header, then `MiB` mebibytes of zeros. Its CRC is wrong on
/// purpose (computing it would cost a pass over the inflated size); a reader notices
/// only at the end, after it has inflated everything, which is what a bomb tests.
fn bomb(rng: &mut Rng, idx: &Idx) -> (Vec<u8>, String) {
    // Just over the default budget of 1 GiB: a bigger bomb finds nothing more, slower.
    let mib = [1100usize, 1500][rng.below(2)];
    let mut header = encode(&Idx {
        dtype: idx.dtype,
        dims: idx.dims.clone(),
        data: Vec::new(),
    });
    if rng.one_in(2) && !idx.dims.is_empty() {
        // Declared dims that match the bomb's size, so a count check alone cannot stop it.
        let rank = idx.dims.len();
        let mut dims = vec![1u32; rank];
        dims[0] = (mib << 20).min(u32::MAX as usize) as u32;
        header = encode(&Idx {
            dtype: idx.dtype,
            dims,
            data: Vec::new(),
        });
    }
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(deflate_full(&header));
    for _ in 0..mib {
        out.extend_from_slice(zero_chunk());
    }
    // The final block: fixed Huffman, end-of-block only.
    out.extend([0x03, 0x00]);
    out.extend(0u32.to_le_bytes()); // CRC32 (wrong)
    out.extend(((mib << 20) as u32).to_le_bytes()); // ISIZE, mod 2^32
    let label = format!("gzip bomb: {mib} MiB of zeros after the header");
    (out, label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_bomb_inflates_to_its_header_and_zeros() {
        let idx = Idx {
            dtype: 8,
            dims: vec![2, 2],
            data: Vec::new(),
        };
        // The chunked stream, shortened to 3 MiB so the test stays cheap.
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        out.extend(deflate_full(&encode(&idx)));
        for _ in 0..3 {
            out.extend_from_slice(zero_chunk());
        }
        out.extend([0x03, 0x00]);
        let mut raw = Vec::new();
        // The CRC is wrong: the error comes after everything was inflated.
        let _ = flate2::read::GzDecoder::new(&out[..]).read_to_end(&mut raw);
        assert_eq!(raw.len(), 12 + (3 << 20));
        assert_eq!(&raw[..4], &[0, 0, 8, 2]);
    }
}
