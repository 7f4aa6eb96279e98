//! Pieces shared by the payload deserializer ([`super::de`]) and the [`Value`] deserializer:
//! the owned tree view ([`Kind`]), Python's equality and hashing of dict keys and set
//! members ([`PyKey`], [`Dedup`]; [`PyKeyIn`] for the loader's tape, whose nodes find
//! their children in the tape), and small helper deserializers for the magic forms.
//!
//! [`Value`]: super::value::Value

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use num_bigint::BigInt;
use num_traits::{FromPrimitive, ToPrimitive};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use crate::error::Error;

/// One node of a tree being handed to serde visitors, taken apart by value.
pub(crate) enum Kind<'de, T> {
    None,
    Bool(bool),
    Int(i64),
    /// Only for values outside the i64 range (the representation is canonical).
    Big(Box<BigInt>),
    Float(f64),
    Complex(f64, f64),
    Str(Cow<'de, str>),
    Bytes(Cow<'de, [u8]>),
    List(Vec<T>),
    Tuple(Vec<T>),
    Dict(Vec<(T, T)>),
    Set(Vec<T>),
    FrozenSet(Vec<T>),
    /// A channel: the gateway uid when known (a loaded payload leaves it to the
    /// gateway scope of the load), and the channel id.
    Channel(Option<u64>, i32),
}

/// A tree that can be handed to serde visitors: a loaded payload node or a `Value`.
pub(crate) trait Tree<'de>: Sized + PyKey {
    /// Takes the node apart.
    fn into_kind(self) -> Kind<'de, Self>;
    /// The text of a str node, without taking it apart.
    fn as_str_ref(&self) -> Option<&str>;
}

// ---------------------------------------------------------------------------------------
// Python equality and hashing of keys
// ---------------------------------------------------------------------------------------

/// A number, normalised so that equal Python numbers (`1 == 1.0 == True == (1+0j)`) have
/// equal normal forms.
pub(crate) enum Num<'k> {
    I(i64),
    B(Cow<'k, BigInt>),
    F(f64),
    C(f64, f64),
}

impl Num<'_> {
    pub(crate) fn float(f: f64) -> Num<'static> {
        if f.is_finite() && f.fract() == 0.0 {
            // -2**63 <= f < 2**63 is exactly the i64 range for integral floats.
            const TWO_63: f64 = (1u64 << 63) as f64;
            if (-TWO_63..TWO_63).contains(&f) {
                Num::I(f as i64)
            } else {
                Num::B(Cow::Owned(BigInt::from_f64(f).expect("finite float")))
            }
        } else {
            Num::F(f)
        }
    }

    pub(crate) fn complex(re: f64, im: f64) -> Num<'static> {
        if im == 0.0 {
            Num::float(re)
        } else {
            Num::C(re, im)
        }
    }

    fn eq(&self, other: &Num<'_>) -> bool {
        match (self, other) {
            (Num::I(a), Num::I(b)) => a == b,
            (Num::B(a), Num::B(b)) => a == b,
            (Num::F(a), Num::F(b)) => a == b,
            (Num::C(a, b), Num::C(c, d)) => a == c && b == d,
            _ => false,
        }
    }

    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Num::I(i) => {
                h.write_u8(1);
                h.write_i64(*i);
            }
            Num::B(b) => {
                h.write_u8(2);
                b.hash(h);
            }
            Num::F(f) => {
                h.write_u8(3);
                h.write_u64(f.to_bits());
            }
            Num::C(re, im) => {
                h.write_u8(4);
                h.write_u64(re.to_bits());
                h.write_u64(im.to_bits());
            }
        }
    }
}

/// A borrowed view of a node for comparing and hashing it as Python does.
pub(crate) enum KeyRef<'k, T> {
    None,
    Num(Num<'k>),
    Str(&'k str),
    Bytes(&'k [u8]),
    Tuple(&'k [T]),
    List(&'k [T]),
    Set(&'k [T]),
    FrozenSet(&'k [T]),
    Dict(&'k [(T, T)]),
    Channel(Option<u64>, i32),
}

/// Nodes that can be compared with Python's `==` and hashed consistently with it.
pub(crate) trait PyKey: Sized {
    fn key_ref(&self) -> KeyRef<'_, Self>;
}

/// Like [`PyKey`], for nodes whose children live in a context `C` (the loader's tape)
/// rather than in the nodes. Every [`PyKey`] is one with the context `()`.
pub(crate) trait PyKeyIn<C: ?Sized>: Sized {
    fn key_ref_in<'k>(&'k self, ctx: &'k C) -> KeyRef<'k, Self>;
}

impl<T: PyKey> PyKeyIn<()> for T {
    fn key_ref_in<'k>(&'k self, _: &'k ()) -> KeyRef<'k, Self> {
        self.key_ref()
    }
}

/// Python's `a == b` (numbers compare across bool, int, float and complex; sets and
/// frozensets compare as sets; a nan is never equal to anything, as between two distinct
/// nan objects in Python).
pub(crate) fn py_eq<T: PyKey>(a: &T, b: &T) -> bool {
    py_eq_in(a, b, &())
}

/// [`py_eq`] of nodes whose children are in `ctx`.
pub(crate) fn py_eq_in<C: ?Sized, T: PyKeyIn<C>>(a: &T, b: &T, ctx: &C) -> bool {
    let eq = |p: &T, q: &T| py_eq_in(p, q, ctx);
    match (a.key_ref_in(ctx), b.key_ref_in(ctx)) {
        (KeyRef::None, KeyRef::None) => true,
        (KeyRef::Num(x), KeyRef::Num(y)) => x.eq(&y),
        (KeyRef::Str(x), KeyRef::Str(y)) => x == y,
        (KeyRef::Bytes(x), KeyRef::Bytes(y)) => x == y,
        (KeyRef::Tuple(x), KeyRef::Tuple(y)) | (KeyRef::List(x), KeyRef::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| eq(p, q))
        }
        (KeyRef::Set(x) | KeyRef::FrozenSet(x), KeyRef::Set(y) | KeyRef::FrozenSet(y)) => {
            x.iter().all(|p| y.iter().any(|q| eq(p, q))) && y.iter().all(|q| x.iter().any(|p| eq(p, q)))
        }
        (KeyRef::Dict(x), KeyRef::Dict(y)) => {
            let sub = |p: &[(T, T)], q: &[(T, T)]| {
                p.iter().all(|(k, v)| q.iter().rev().find(|(qk, _)| eq(qk, k)).is_some_and(|(_, w)| eq(v, w)))
            };
            sub(x, y) && sub(y, x)
        }
        (KeyRef::Channel(u1, i1), KeyRef::Channel(u2, i2)) => u1 == u2 && i1 == i2,
        _ => false,
    }
}

/// Whether Python can hash the node (lists, dicts and sets cannot; tuples only when all
/// their items can).
pub(crate) fn py_hashable<T: PyKey>(k: &T) -> bool {
    match k.key_ref() {
        KeyRef::List(_) | KeyRef::Set(_) | KeyRef::Dict(_) => false,
        KeyRef::Tuple(items) => items.iter().all(py_hashable),
        _ => true,
    }
}

/// A hash consistent with [`py_eq_in`]: equal nodes hash equal.
fn py_hash_in<C: ?Sized, T: PyKeyIn<C>, H: Hasher>(k: &T, ctx: &C, h: &mut H) {
    match k.key_ref_in(ctx) {
        KeyRef::None => h.write_u8(0),
        KeyRef::Num(n) => n.hash(h),
        KeyRef::Str(s) => {
            h.write_u8(5);
            h.write(s.as_bytes());
            h.write_usize(s.len());
        }
        KeyRef::Bytes(b) => {
            h.write_u8(6);
            h.write(b);
            h.write_usize(b.len());
        }
        KeyRef::Tuple(items) => {
            h.write_u8(7);
            h.write_usize(items.len());
            for i in items {
                py_hash_in(i, ctx, h);
            }
        }
        KeyRef::Set(items) | KeyRef::FrozenSet(items) => {
            // Order-independent, and independent of duplicate members.
            h.write_u8(8);
            let mut hashes: Vec<u64> = items
                .iter()
                .map(|i| {
                    let mut sub = FixedHasher::default();
                    py_hash_in(i, ctx, &mut sub);
                    sub.finish()
                })
                .collect();
            hashes.sort_unstable();
            hashes.dedup();
            for x in hashes {
                h.write_u64(x);
            }
        }
        KeyRef::List(items) => {
            h.write_u8(10);
            h.write_usize(items.len());
        }
        KeyRef::Dict(entries) => {
            h.write_u8(11);
            let _ = entries;
        }
        KeyRef::Channel(_, id) => {
            h.write_u8(9);
            h.write_i32(id);
        }
    }
}

/// A small deterministic hasher (used inside [`py_hash_in`] for set members, where the
/// combination must not depend on a random seed).
#[derive(Default)]
pub(crate) struct FixedHasher(u64);

impl Hasher for FixedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u8(&mut self, x: u8) {
        self.write_u64(x as u64);
    }
    fn write_i32(&mut self, x: i32) {
        self.write_u64(x as u32 as u64);
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    fn finish(&self) -> u64 {
        // murmur3's final mix, so that every bit of the state reaches the low bits.
        let mut z = self.0;
        z ^= z >> 33;
        z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^= z >> 33;
        z = z.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        z ^ (z >> 33)
    }
}

/// A hasher for keys that already are hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

const NO_NEXT: u32 = u32::MAX;

/// Removes duplicate dict keys and set members with Python's semantics, in one pass.
/// The scratch tables are kept between calls, so that a whole load allocates them once.
pub(crate) struct Dedup {
    seed: RandomState,
    first: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    next: Vec<u32>,
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup { seed: RandomState::new(), first: HashMap::default(), next: Vec::new() }
    }
}

/// Up to this many entries, duplicates are searched by comparing all pairs.
const SMALL: usize = 8;

/// A key of the kinds most dict keys are, whose Python equality is plain equality.
#[derive(Clone, Copy, PartialEq)]
enum Simple<'k> {
    Str(&'k str),
    /// A bool, an int in the i64 range, or a float or complex equal to one.
    Int(i64),
}

/// Whether at most [`SMALL`] keys are all strs or ints (see [`Simple`]) and no two are
/// equal: the common case, in which deduplication has nothing to do and the pairwise
/// [`py_eq_in`] of the general path can be skipped.
fn all_distinct_simple<'k, C: ?Sized, E, T: PyKeyIn<C> + 'k>(v: &'k [E], key: &impl Fn(&E) -> &T, ctx: &'k C) -> bool {
    let mut simple = [Simple::Int(0); SMALL];
    for (slot, e) in simple.iter_mut().zip(v) {
        *slot = match key(e).key_ref_in(ctx) {
            KeyRef::Str(s) => Simple::Str(s),
            KeyRef::Num(Num::I(i)) => Simple::Int(i),
            _ => return false,
        };
    }
    let simple = &simple[..v.len()];
    (1..simple.len()).all(|r| !simple[..r].contains(&simple[r]))
}

impl Dedup {
    /// Applies the entries in order as `d[k] = v` does: a key equal to an earlier one
    /// keeps the earlier key and its position and takes the later value.
    pub(crate) fn dict<T: PyKey>(&mut self, entries: &mut Vec<(T, T)>) {
        let kept = self.dict_in(entries, &());
        entries.truncate(kept);
    }

    /// Keeps the first of equal members, as `set(items)` does.
    pub(crate) fn set<T: PyKey>(&mut self, items: &mut Vec<T>) {
        let kept = self.set_by(items, |e| e, &());
        items.truncate(kept);
    }

    /// [`Dedup::dict`] of entries whose children are in `ctx`: the merged entries are
    /// moved to the front, and their number is returned (what follows is left over).
    pub(crate) fn dict_in<C: ?Sized, T: PyKeyIn<C>>(&mut self, entries: &mut [(T, T)], ctx: &C) -> usize {
        self.run(
            entries,
            |e| &e.0,
            |v, kept, dup| {
                let (a, b) = v.split_at_mut(dup);
                std::mem::swap(&mut a[kept].1, &mut b[0].1);
            },
            ctx,
        )
    }

    /// [`Dedup::set`] of elements holding a member each (`key` finds it) whose children
    /// are in `ctx`: the kept elements are moved to the front, in order, and their number
    /// is returned.
    pub(crate) fn set_by<C: ?Sized, E, T: PyKeyIn<C>>(
        &mut self,
        items: &mut [E],
        key: impl Fn(&E) -> &T,
        ctx: &C,
    ) -> usize {
        self.run(items, key, |_, _, _| {}, ctx)
    }

    fn run<C: ?Sized, E, T: PyKeyIn<C>>(
        &mut self,
        v: &mut [E],
        key: impl Fn(&E) -> &T,
        merge: impl Fn(&mut [E], usize, usize),
        ctx: &C,
    ) -> usize {
        let n = v.len();
        if n < 2 {
            return n;
        }
        let mut w = 0;
        if n <= SMALL {
            if all_distinct_simple(v, &key, ctx) {
                return n;
            }
            for r in 0..n {
                match (0..w).find(|&j| py_eq_in(key(&v[j]), key(&v[r]), ctx)) {
                    Some(j) => merge(v, j, r),
                    None => {
                        v.swap(w, r);
                        w += 1;
                    }
                }
            }
            return w;
        }
        self.first.clear();
        self.next.clear();
        for r in 0..n {
            let mut h = self.seed.build_hasher();
            py_hash_in(key(&v[r]), ctx, &mut h);
            let h = h.finish();
            let mut found = None;
            if let Some(&head) = self.first.get(&h) {
                let mut j = head;
                while j != NO_NEXT {
                    if py_eq_in(key(&v[j as usize]), key(&v[r]), ctx) {
                        found = Some(j as usize);
                        break;
                    }
                    j = self.next[j as usize];
                }
            }
            match found {
                Some(j) => merge(v, j, r),
                None => {
                    v.swap(w, r);
                    let prev = self.first.insert(h, w as u32).unwrap_or(NO_NEXT);
                    self.next.push(prev);
                    w += 1;
                }
            }
        }
        w
    }
}

// ---------------------------------------------------------------------------------------
// Helper deserializers
// ---------------------------------------------------------------------------------------

/// Shows at most a few dozen characters of an integer's decimal text in a message.
pub(crate) fn short_int_text(b: &BigInt) -> String {
    let s = b.to_string();
    if s.len() <= 40 {
        s
    } else {
        format!("{}...{} ({} digits)", &s[..20], &s[s.len() - 10..], s.trim_start_matches('-').len())
    }
}

/// Presents a big integer to a visitor: as u64, i128 or u128 when it fits, else as the
/// single-entry map `{BIGINT_TOKEN: decimal text}`.
pub(crate) fn visit_big<'de, V: Visitor<'de>>(b: BigInt, v: V) -> Result<V::Value, Error> {
    if let Some(x) = b.to_u64() {
        v.visit_u64(x)
    } else if let Some(x) = b.to_i128() {
        v.visit_i128(x)
    } else if let Some(x) = b.to_u128() {
        v.visit_u128(x)
    } else {
        v.visit_map(MagicMap::new(super::BIGINT_TOKEN, b.to_string().into_deserializer()))
    }
}

/// A map with the one entry `{key: value}`.
pub(crate) struct MagicMap<D> {
    key: Option<&'static str>,
    value: Option<D>,
}

impl<D> MagicMap<D> {
    pub(crate) fn new(key: &'static str, value: D) -> Self {
        MagicMap { key: Some(key), value: Some(value) }
    }
}

impl<'de, D: Deserializer<'de, Error = Error>> MapAccess<'de> for MagicMap<D> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        match self.key.take() {
            Some(k) => seed.deserialize(de::value::StrDeserializer::<Error>::new(k)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(v),
            None => Err(Error::data_format("map value asked for twice", None)),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.key.is_some() as usize)
    }
}

/// A two-item sequence `(a, b)`, such as a channel's `(uid, id)` or a complex `(re, im)`.
pub(crate) struct PairDe<A, B>(pub A, pub B);

impl<'de, A, B> Deserializer<'de> for PairDe<A, B>
where
    A: IntoDeserializer<'de, Error>,
    B: IntoDeserializer<'de, Error>,
{
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let mut seq = PairSeq { a: Some(self.0), b: Some(self.1) };
        let out = v.visit_seq(&mut seq)?;
        let left = seq.a.is_some() as usize + seq.b.is_some() as usize;
        if left > 0 {
            return Err(de::Error::invalid_length(2, &format!("{} elements", 2 - left).as_str()));
        }
        Ok(out)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct PairSeq<A, B> {
    a: Option<A>,
    b: Option<B>,
}

impl<'de, A, B> SeqAccess<'de> for PairSeq<A, B>
where
    A: IntoDeserializer<'de, Error>,
    B: IntoDeserializer<'de, Error>,
{
    type Error = Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Error> {
        if let Some(a) = self.a.take() {
            return seed.deserialize(a.into_deserializer()).map(Some);
        }
        if let Some(b) = self.b.take() {
            return seed.deserialize(b.into_deserializer()).map(Some);
        }
        Ok(None)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.a.is_some() as usize + self.b.is_some() as usize)
    }
}
