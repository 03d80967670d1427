//! Token-level edits on token ids (substitute, drop, mask), for variants made after
//! tokenization. Special tokens (CLS, SEP, PAD, …) and the mask token are never edited.
//!
//! The scheme is counter-based so that a GPU kernel can reproduce it exactly, one thread per
//! position, with no sequential stream. For ids `x`, rate q, seed `s`, copy `j`:
//! 1. The editable positions are those whose id is neither special nor the mask id; number them
//!    by ordinal `r = 0..e` in order. Only their ids enter the scheme, so padding (left or
//!    right) and the CLS/SEP frame never change which tokens are edited.
//! 2. `h` = FNV-1a over the editable ids' little-endian bytes, basis `0xCBF29CE484222325 ^
//!    mix(s)`, then `mix` ([`crate::rng::hash_str`] over ids instead of bytes of text).
//! 3. `t = mix(h ^ mix(tag·γ + j))`, γ = `0x9E3779B97F4A7C15`, tag 101 / 102 / 103 for
//!    substitute / drop / mask.
//! 4. Ordinal `r` has key `mix(t + (r+1)·γ)` (the `r+1`-th SplitMix64 output from `t`); the
//!    m = [`edit_count`]`(q, e)` ordinals with the smallest keys are edited (keys are distinct).
//! 5. Substitute draws `v = mix(t' + (r+1)·γ)` with `t' = t ^ 0xD1B54A32D192ED03`, starts at
//!    `(v · V) >> 64` (V the vocabulary size) and walks up modulo V past special ids, the mask
//!    id and the original id. Drop removes the token; mask writes the mask id.

use super::{check_rate, edit_count, stream, GOLDEN};
use crate::error::{Error, Result};
use crate::rng::mix;

/// Salt of the substitute-value stream, so values are unrelated to the selection keys.
const VALUE_SALT: u64 = 0xD1B5_4A32_D192_ED03;

/// One edit applied to token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenEdit {
    /// m editable tokens replaced by random ids, never special, never the mask id, never the
    /// token they replace: exactly m positions change, the length stays.
    Substitute,
    /// m editable tokens removed: the sequence gets m shorter (re-pad before batching).
    Drop,
    /// m editable tokens replaced by the mask id: exactly m positions change.
    Mask,
}

impl TokenEdit {
    /// Every token edit, in a fixed order.
    pub const ALL: &'static [TokenEdit] =
        &[TokenEdit::Substitute, TokenEdit::Drop, TokenEdit::Mask];

    /// The edit's name in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            TokenEdit::Substitute => "token-substitute",
            TokenEdit::Drop => "token-drop",
            TokenEdit::Mask => "token-mask",
        }
    }

    /// The edit named `name` (see [`TokenEdit::name`]).
    pub fn parse(name: &str) -> Option<TokenEdit> {
        TokenEdit::ALL.iter().copied().find(|e| e.name() == name)
    }

    /// The stream tag (step 3 of the module's scheme). Fixed forever.
    fn tag(self) -> u64 {
        match self {
            TokenEdit::Substitute => 101,
            TokenEdit::Drop => 102,
            TokenEdit::Mask => 103,
        }
    }
}

impl std::fmt::Display for TokenEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A token edit and its rate q: ⌈q·e⌉ of the e editable tokens are edited (see [`edit_count`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenPerturbation {
    edit: TokenEdit,
    rate: f64,
}

impl TokenPerturbation {
    /// `edit` at rate `rate`.
    ///
    /// # Errors
    /// [`Error::Config`] when `rate` is not a number in `[0, 1]`.
    pub fn new(edit: TokenEdit, rate: f64) -> Result<Self> {
        Ok(Self {
            edit,
            rate: check_rate(rate)?,
        })
    }

    /// The edit.
    pub fn edit(&self) -> TokenEdit {
        self.edit
    }

    /// The rate q.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// What token edits need to know about the vocabulary: its size, the mask id, and the ids that
/// must never be edited nor drawn (CLS, SEP, PAD, UNK, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpace {
    vocab_size: u32,
    mask_id: u32,
    special: Vec<u32>,
}

impl TokenSpace {
    /// A vocabulary of `vocab_size` ids with mask id `mask_id` and the `special` ids.
    ///
    /// # Errors
    /// [`Error::Config`] when `mask_id` is not below `vocab_size`, or fewer than two ids are
    /// left to substitute with once special ids and the mask id are set aside.
    ///
    /// ```
    /// use tremble::perturb::TokenSpace;
    /// // BERT uncased: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103.
    /// let bert = TokenSpace::new(30522, 103, &[0, 100, 101, 102])?;
    /// assert!(bert.is_protected(101) && bert.is_protected(103) && !bert.is_protected(2023));
    /// assert!(TokenSpace::new(3, 2, &[0, 1]).is_err());
    /// # Ok::<(), tremble::Error>(())
    /// ```
    pub fn new(vocab_size: u32, mask_id: u32, special: &[u32]) -> Result<Self> {
        if mask_id >= vocab_size {
            return Err(Error::Config(format!(
                "token space: mask id {mask_id} is not below the vocabulary size {vocab_size}"
            )));
        }
        let mut special = special.to_vec();
        special.sort_unstable();
        special.dedup();
        let space = Self {
            vocab_size,
            mask_id,
            special,
        };
        let protected = space.special.iter().filter(|&&id| id < vocab_size).count()
            + usize::from(space.special.binary_search(&mask_id).is_err());
        if (vocab_size as usize) < protected + 2 {
            return Err(Error::Config(format!(
                "token space: a vocabulary of {vocab_size} ids with {protected} special or mask \
                 ids leaves fewer than 2 ids to substitute with"
            )));
        }
        Ok(space)
    }

    /// The vocabulary size.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// The mask id.
    pub fn mask_id(&self) -> u32 {
        self.mask_id
    }

    /// The special ids, sorted, without duplicates.
    pub fn special(&self) -> &[u32] {
        &self.special
    }

    /// Whether `id` is special or the mask id: never edited, never drawn.
    pub fn is_protected(&self, id: u32) -> bool {
        id == self.mask_id || self.special.binary_search(&id).is_ok()
    }
}

/// Copy `copy` of `ids` under `cfg`, for `seed`, following the module's counter-based scheme.
/// Protected ids (special and mask) are kept in place and never drawn; ids at or above the
/// vocabulary size are edited like any other but never drawn either. Rate 0 returns `ids`.
///
/// ```
/// use tremble::perturb::{perturb_ids, TokenEdit, TokenPerturbation, TokenSpace};
///
/// let space = TokenSpace::new(30522, 103, &[0, 100, 101, 102])?;
/// let ids = [101, 7592, 2088, 999, 2003, 102, 0, 0];
/// let cfg = TokenPerturbation::new(TokenEdit::Mask, 0.5)?;
/// let out = perturb_ids(&ids, cfg, 7, 0, &space);
/// assert_eq!(out.iter().filter(|&&id| id == 103).count(), 2);
/// assert_eq!((out[0], out[5], out[6]), (101, 102, 0));
/// # Ok::<(), tremble::Error>(())
/// ```
pub fn perturb_ids(
    ids: &[u32],
    cfg: TokenPerturbation,
    seed: u64,
    copy: usize,
    space: &TokenSpace,
) -> Vec<u32> {
    let editable: Vec<usize> = (0..ids.len())
        .filter(|&i| !space.is_protected(ids[i]))
        .collect();
    let m = edit_count(cfg.rate, editable.len());
    if m == 0 {
        return ids.to_vec();
    }
    let t = stream(
        hash_ids(seed, editable.iter().map(|&i| ids[i])),
        cfg.edit.tag(),
        copy as u64,
    );
    let mut by_key: Vec<(u64, usize)> = (0..editable.len()).map(|r| (counter(t, r), r)).collect();
    by_key.sort_unstable();
    let mut hit = vec![false; ids.len()];
    for &(_, r) in &by_key[..m] {
        hit[editable[r]] = true;
    }
    let mut out = Vec::with_capacity(ids.len());
    let mut ordinal = 0;
    for (i, &id) in ids.iter().enumerate() {
        if !hit[i] {
            out.push(id);
        } else {
            match cfg.edit {
                TokenEdit::Substitute => out.push(substitute(t, ordinal, id, space)),
                TokenEdit::Drop => {}
                TokenEdit::Mask => out.push(space.mask_id),
            }
        }
        ordinal += usize::from(!space.is_protected(id));
    }
    out
}

/// The `r+1`-th SplitMix64 output of the stream seeded `t`, computed directly.
fn counter(t: u64, r: usize) -> u64 {
    mix(t.wrapping_add((r as u64 + 1).wrapping_mul(GOLDEN)))
}

/// A random id for editable ordinal `r` (step 5 of the module's scheme).
fn substitute(t: u64, r: usize, original: u32, space: &TokenSpace) -> u32 {
    let v = counter(t ^ VALUE_SALT, r);
    let vocab = space.vocab_size;
    let mut id = ((u128::from(v) * u128::from(vocab)) >> 64) as u32;
    // TokenSpace::new guarantees two drawable ids, so one differs from `original` and the walk
    // ends within `vocab` steps.
    while space.is_protected(id) || id == original {
        id = if id + 1 == vocab { 0 } else { id + 1 };
    }
    id
}

/// FNV-1a over the ids' little-endian bytes, then mixed (step 2 of the module's scheme).
fn hash_ids(seed: u64, ids: impl Iterator<Item = u32>) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64 ^ mix(seed);
    for id in ids {
        for b in id.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
    }
    mix(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bert() -> TokenSpace {
        TokenSpace::new(30522, 103, &[0, 100, 101, 102]).unwrap()
    }

    #[test]
    fn space_is_validated() {
        assert!(TokenSpace::new(10, 10, &[]).is_err());
        assert!(TokenSpace::new(2, 1, &[]).is_err());
        assert!(TokenSpace::new(3, 1, &[]).is_ok());
        assert!(TokenSpace::new(4, 1, &[0, 2]).is_err());
        // Duplicates and out-of-vocabulary specials do not count twice or at all.
        assert!(TokenSpace::new(4, 1, &[0, 0, 1, 99]).is_ok());
        assert_eq!(bert().special(), &[0, 100, 101, 102]);
    }

    #[test]
    fn counter_matches_the_sequential_stream() {
        let mut rng = crate::rng::Rng::new(42);
        for r in 0..10 {
            assert_eq!(counter(42, r), rng.next_u64());
        }
    }

    #[test]
    fn hash_ids_matches_hash_str_on_bytes() {
        // Four little-endian bytes per id: what a GPU twin must hash to agree.
        let text = "\u{1}\0\0\0\u{2}\0\0\0";
        assert_eq!(
            hash_ids(9, [1u32, 2].into_iter()),
            crate::rng::hash_str(9, text)
        );
    }

    #[test]
    fn substitute_walks_past_protected_ids() {
        // Only 3 and 4 are drawable: each must be replaced by the other.
        let tiny = TokenSpace::new(6, 5, &[0, 1, 2]).unwrap();
        for t in 0..200 {
            assert_eq!(substitute(t, 0, 3, &tiny), 4);
            assert_eq!(substitute(t, 1, 4, &tiny), 3);
        }
        let space = bert();
        for t in 0..2000 {
            let id = substitute(t, 3, 2023, &space);
            assert!(id < 30522 && id != 2023 && !space.is_protected(id));
        }
    }
}
