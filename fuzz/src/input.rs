//! Turning fuzz input into hostile bytes: raw bytes behind a format's magic
//! number, and mutations of valid encodings (flipped bytes, integer fields
//! set to values that break length arithmetic, truncation, extension,
//! splices). Everything is drawn from an [`Unstructured`], so the same
//! input bytes always make the same case, under AFL or the seeded driver.

use arbitrary::Unstructured;

/// Values that break length and count arithmetic.
const SPECIAL: &[u64] = &[
    0,
    1,
    2,
    u16::MAX as u64,
    0x7fff_ffff,
    0x8000_0000,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    1 << 63,
    u64::MAX,
    u64::MAX - 1,
];

/// A special value, a small one, or any.
pub fn special(u: &mut Unstructured<'_>) -> u64 {
    match u.int_in_range(0..=3u8).unwrap_or(0) {
        0 | 1 => SPECIAL[u.choose_index(SPECIAL.len()).unwrap_or(0)],
        2 => u.int_in_range(0..=5000u64).unwrap_or(0),
        _ => u.arbitrary().unwrap_or(0),
    }
}

/// A known integer field of a format: offset and width in bytes.
pub type Field = (usize, usize);

#[derive(Clone, Debug)]
pub enum Mutation {
    /// XOR a byte (position modulo the length).
    Xor(usize, u8),
    /// Write a little-endian integer of 1, 2, 4 or 8 bytes anywhere.
    Int { at: usize, width: u8, value: u64 },
    /// Overwrite one of the format's known integer fields.
    Field { which: usize, value: u64 },
    /// Add a small delta to one of the format's known integer fields.
    Nudge { which: usize, delta: i16 },
    /// Cut the input (length modulo the length + 1).
    Truncate(usize),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Replace `remove` bytes at `at` by `insert`.
    Splice {
        at: usize,
        remove: usize,
        insert: Vec<u8>,
    },
}

fn bytes(u: &mut Unstructured<'_>, max: usize) -> Vec<u8> {
    let n = u.int_in_range(0..=max).unwrap_or(0);
    u.bytes(n).map(<[u8]>::to_vec).unwrap_or_default()
}

fn mutation(u: &mut Unstructured<'_>) -> Mutation {
    match u.int_in_range(0..=13u8).unwrap_or(0) {
        0..=2 => Mutation::Xor(
            u.arbitrary().unwrap_or(0),
            u.int_in_range(1..=255).unwrap_or(1),
        ),
        3 | 4 => Mutation::Int {
            at: u.arbitrary().unwrap_or(0),
            width: [1u8, 2, 4, 8][u.choose_index(4).unwrap_or(0)],
            value: special(u),
        },
        5..=8 => Mutation::Field {
            which: u.arbitrary().unwrap_or(0),
            value: special(u),
        },
        9 | 10 => Mutation::Nudge {
            which: u.arbitrary().unwrap_or(0),
            delta: u.int_in_range(-3..=3).unwrap_or(1),
        },
        11 => Mutation::Truncate(u.arbitrary().unwrap_or(0)),
        12 => Mutation::Extend(bytes(u, 40)),
        _ => Mutation::Splice {
            at: u.arbitrary().unwrap_or(0),
            remove: u.int_in_range(0..=64).unwrap_or(0),
            insert: bytes(u, 40),
        },
    }
}

/// One to four mutations.
pub fn mutations(u: &mut Unstructured<'_>) -> Vec<Mutation> {
    let n = u.int_in_range(1..=4usize).unwrap_or(1);
    (0..n).map(|_| mutation(u)).collect()
}

/// How to make a file's header agree with a damaged body: 0 not at all,
/// 1 the checksum, 2 the length and the checksum (mostly 2, so that the
/// damage reaches the body parser).
pub fn reseal_mode(u: &mut Unstructured<'_>) -> u8 {
    match u.int_in_range(0..=8u8).unwrap_or(8) {
        0 => 0,
        1 | 2 => 1,
        _ => 2,
    }
}

/// `prefix` (a magic number, say) followed by the rest of the input,
/// sometimes cut inside the prefix.
pub fn after(u: &mut Unstructured<'_>, prefix: &[u8]) -> Vec<u8> {
    let cut = u.int_in_range(0..=prefix.len() + 8).unwrap_or(0);
    let mut v = prefix[..cut.min(prefix.len())].to_vec();
    v.extend_from_slice(rest(u));
    v
}

/// Everything left of the input.
pub fn rest<'a>(u: &mut Unstructured<'a>) -> &'a [u8] {
    std::mem::replace(u, Unstructured::new(&[])).take_rest()
}

pub fn read_int(buf: &[u8], at: usize, width: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(width)?)?;
    let mut a = [0u8; 8];
    a[..width].copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

pub fn write_int(buf: &mut [u8], at: usize, width: usize, value: u64) {
    if let Some(b) = at.checked_add(width).and_then(|end| buf.get_mut(at..end)) {
        b.copy_from_slice(&value.to_le_bytes()[..width]);
    }
}

fn apply(buf: &mut Vec<u8>, m: &Mutation, fields: &[Field]) {
    let len = buf.len();
    match m {
        Mutation::Xor(at, mask) => {
            if len > 0 {
                buf[at % len] ^= mask;
            }
        }
        Mutation::Int { at, width, value } => {
            let w = usize::from(*width);
            if len >= w {
                write_int(buf, at % (len - w + 1), w, *value);
            }
        }
        Mutation::Field { which, value } => {
            if let Some(&(at, w)) = fields.get(which % fields.len().max(1)) {
                write_int(buf, at, w, *value);
            }
        }
        Mutation::Nudge { which, delta } => {
            if let Some(&(at, w)) = fields.get(which % fields.len().max(1)) {
                if let Some(v) = read_int(buf, at, w) {
                    write_int(buf, at, w, v.wrapping_add(*delta as i64 as u64));
                }
            }
        }
        Mutation::Truncate(n) => buf.truncate(n % (len + 1)),
        Mutation::Extend(more) => buf.extend_from_slice(more),
        Mutation::Splice { at, remove, insert } => {
            let at = at % (len + 1);
            let end = at.saturating_add(*remove).min(len);
            buf.splice(at..end, insert.iter().copied());
        }
    }
}

/// `base` with `muts` applied in order.
pub fn mutate(base: &[u8], muts: &[Mutation], fields: &[Field]) -> Vec<u8> {
    let mut v = base.to_vec();
    for m in muts {
        apply(&mut v, m, fields);
    }
    v
}
