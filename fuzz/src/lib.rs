//! Shared pieces of the fuzz targets in `tests/`.
//!
//! Random bytes rarely get past a parser's first check, so most targets start
//! from a real document (a provider's sample payload, a bundled manifest, a
//! calendar export) and let the fuzzer edit it: the input chooses the seed and
//! a list of byte edits. Coverage-guided engines then explore from there.

use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use bolero::generator::TypeGenerator;
use bolero::generator::bolero_generator::driver::{ByteSliceDriver, Options};
use serde_json::{Map, Value, json};

/// Runs a fuzz target on values of a type.
///
/// - Under `cargo test` (the test command): a deterministic sweep of
///   [`SWEEP`] generated values, the same on every machine, so the suite
///   never fails at random.
/// - With `PRESENCE_FUZZ_SECONDS=N`: bolero's random engine for N seconds.
/// - Under cargo-bolero: coverage-guided (libFuzzer, AFL).
#[macro_export]
macro_rules! fuzz {
    ($ty:ty, $check:expr) => {
        $crate::fuzz!($ty, sweep = $crate::SWEEP, $check)
    };
    // A target whose every input costs real work (a store transaction) sweeps
    // fewer values in the test command; random and guided runs are the same.
    ($ty:ty, sweep = $n:expr, $check:expr) => {{
        match $crate::random_time() {
            Some(time) => bolero::check!()
                .with_type::<$ty>()
                .with_test_time(time)
                .for_each($check),
            None if cfg!(fuzzing) => bolero::check!().with_type::<$ty>().for_each($check),
            None => $crate::sweep::<$ty>($n, $check),
        }
    }};
}

/// `PRESENCE_FUZZ_SECONDS`, when set: how long a random run lasts.
pub fn random_time() -> Option<Duration> {
    std::env::var("PRESENCE_FUZZ_SECONDS")
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// Values each target sees in the test command (unless it says fewer).
pub const SWEEP: u64 = 20_000;

/// Runs `check` on `count` values generated from a fixed stream of bytes (the
/// same stream for every target: a smaller count sweeps a prefix of it); a
/// failure names the input.
pub fn sweep<T: TypeGenerator + Debug>(count: u64, check: impl Fn(&T)) {
    let options = Options::default().with_max_len(2048);
    let mut state: u64 = 0x005e_ed0f_ba5e;
    let mut bytes = vec![0u8; 2048];
    for i in 0..count {
        for chunk in bytes.chunks_mut(8) {
            state = splitmix64(state);
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let mut driver = ByteSliceDriver::new(&bytes, &options);
        let Some(value) = T::generate(&mut driver) else {
            continue;
        };
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&value))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("sweep input {i} failed: {message}\ninput: {value:?}");
        }
    }
}

/// The next state of SplitMix64: a well-mixed, reproducible byte stream.
fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One edit: at `pos` (modulo the length), replace, insert or delete a byte.
pub type Edit = (u16, u8, u8);

/// `seed` with `edits` applied in order.
pub fn mutate(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for &(pos, op, byte) in edits {
        let len = out.len();
        match op % 3 {
            0 if len > 0 => out[pos as usize % len] = byte,
            1 => out.insert(pos as usize % (len + 1), byte),
            2 if len > 0 => {
                out.remove(pos as usize % len);
            }
            _ => out.push(byte),
        }
    }
    out
}

/// The seed chosen by `index` among `seeds`, edited.
pub fn pick(seeds: &[&[u8]], index: u8, edits: &[Edit]) -> Vec<u8> {
    mutate(seeds[index as usize % seeds.len()], edits)
}

/// One edit of a JSON document: which field (an index into the target's list
/// of paths), what kind of value to put there, and the fuzzer's text and number.
pub type FieldEdit = (u8, u8, String, u64);

/// At most `n` of the fuzzer's edits: a real document changed in a few places
/// says more than one changed beyond recognition (the sweep's vectors are long).
pub fn few<T>(edits: &[T], n: usize) -> &[T] {
    &edits[..edits.len().min(n)]
}

/// The value an edit of `kind` puts at its field (the fuzzer's `text` or `n`,
/// a negative, fractional, boolean or null value, or one of the target's
/// `constants`); `None` removes the field.
pub fn edit_value(kind: u8, text: &str, n: u64, constants: &[Value]) -> Option<Value> {
    Some(match kind % 8 {
        0 => Value::String(text.to_string()),
        1 => json!(n),
        2 => json!(-((n >> 1) as i64)),
        3 => json!(n as f64 / 3.0),
        4 => Value::Bool(n % 2 == 1),
        5 => Value::Null,
        6 => return None,
        _ => constants[n as usize % constants.len()].clone(),
    })
}

/// Sets (or removes) the member at the dotted `path` of `root` (a number is an
/// index into an array); missing objects on the way are created, anything
/// else on the way leaves `root` as it is.
pub fn set_path(root: &mut Value, path: &str, value: Option<Value>) {
    let mut here = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        if let (true, Ok(i)) = (here.is_array(), part.parse::<usize>()) {
            let array = here.as_array_mut().expect("an array");
            if i >= array.len() {
                return;
            }
            if last {
                match value {
                    Some(value) => array[i] = value,
                    None => {
                        array.remove(i);
                    }
                }
                return;
            }
            here = &mut array[i];
            continue;
        }
        let Some(object) = here.as_object_mut() else {
            return;
        };
        if last {
            match value {
                Some(value) => {
                    object.insert(part.to_string(), value);
                }
                None => {
                    object.remove(part);
                }
            }
            return;
        }
        here = object
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// `seed` (JSON) with the field edits at `paths`, then the byte edits, applied.
pub fn edit_json(
    seed: &[u8],
    paths: &[&str],
    constants: &[Value],
    fields: &[FieldEdit],
    edits: &[Edit],
) -> Vec<u8> {
    let seed = if fields.is_empty() {
        seed.to_vec()
    } else {
        let mut value: Value = serde_json::from_slice(seed).expect("seeds are JSON");
        for (field, kind, text, n) in fields {
            let path = paths[*field as usize % paths.len()];
            set_path(&mut value, path, edit_value(*kind, text, *n, constants));
        }
        value.to_string().into_bytes()
    };
    mutate(&seed, edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_the_same_every_time_and_reports_the_failing_input() {
        use std::sync::Mutex;
        let seen = Mutex::new(Vec::new());
        sweep::<(u8, Vec<u16>)>(SWEEP, |v| seen.lock().unwrap().push(v.clone()));
        let first = seen.into_inner().unwrap();
        let again = Mutex::new(Vec::new());
        sweep::<(u8, Vec<u16>)>(SWEEP, |v| again.lock().unwrap().push(v.clone()));
        assert_eq!(first, again.into_inner().unwrap());
        assert!(first.len() as u64 > SWEEP / 2);
        assert!(
            first.iter().any(|(_, v)| v.len() > 3),
            "values vary in size"
        );
        let failed = catch_unwind(|| sweep::<u8>(SWEEP, |b| assert_ne!(*b, 7)));
        let message = failed.unwrap_err().downcast::<String>().unwrap();
        assert!(
            message.contains("sweep input") && message.contains("input: 7"),
            "{message}"
        );
    }

    #[test]
    fn edits_replace_insert_and_delete() {
        assert_eq!(mutate(b"abc", &[(1, 0, b'X')]), b"aXc");
        assert_eq!(mutate(b"abc", &[(3, 1, b'X')]), b"abcX");
        assert_eq!(mutate(b"abc", &[(4, 2, 0)]), b"ac");
        assert_eq!(mutate(b"", &[(9, 0, b'X')]), b"X");
        assert_eq!(mutate(b"", &[(9, 2, 0)]), b"\0");
    }
}
