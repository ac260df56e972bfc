//! A set of 16-bit packet identifiers whose size is bounded by the id space, not by a setting:
//! the inbound QoS 2 ids awaiting PUBREL (§4.3.3). A client that ignores Receive Maximum (most
//! do; a 3.1.1 client cannot know it) may hold up to 65535 of them, so the set must stay cheap
//! at that size: a few ids live in a small `Vec`; beyond `SMALL` the set becomes a 65536-bit
//! bitset (8 KiB), and it frees that bitset once it is empty again.

/// Most ids kept in the `Vec` form (128 bytes); a linear scan of this many is cheaper than
/// hashing, and one more would be the point where the bitset pays off in lookups.
const SMALL: usize = 64;

/// 64-bit words in the bitset: one bit per possible `u16`.
const WORDS: usize = (u16::MAX as usize + 1) / 64;

#[derive(Debug)]
enum Repr {
    Few(Vec<u16>),
    /// Boxed so the enum stays small while the set is small.
    Many {
        bits: Box<[u64]>,
        len: usize,
    },
}

/// A set of `u16`, at most ~8 KiB whatever it holds.
#[derive(Debug)]
pub struct PacketIdSet(Repr);

impl Default for PacketIdSet {
    fn default() -> Self {
        PacketIdSet::new()
    }
}

impl PacketIdSet {
    pub const fn new() -> PacketIdSet {
        PacketIdSet(Repr::Few(Vec::new()))
    }

    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Few(ids) => ids.len(),
            Repr::Many { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: u16) -> bool {
        match &self.0 {
            Repr::Few(ids) => ids.contains(&id),
            Repr::Many { bits, .. } => bits[word(id)] & bit(id) != 0,
        }
    }

    /// Adds `id`; returns whether it was new.
    pub fn insert(&mut self, id: u16) -> bool {
        if self.contains(id) {
            return false;
        }
        match &mut self.0 {
            Repr::Few(ids) if ids.len() < SMALL => ids.push(id),
            Repr::Few(ids) => {
                let mut bits = vec![0u64; WORDS].into_boxed_slice();
                for &old in ids.iter().chain(std::iter::once(&id)) {
                    bits[word(old)] |= bit(old);
                }
                let len = ids.len() + 1;
                self.0 = Repr::Many { bits, len };
            }
            Repr::Many { bits, len } => {
                bits[word(id)] |= bit(id);
                *len += 1;
            }
        }
        true
    }

    /// Removes `id`; returns whether it was there.
    pub fn remove(&mut self, id: u16) -> bool {
        let removed = match &mut self.0 {
            Repr::Few(ids) => match ids.iter().position(|&x| x == id) {
                Some(i) => {
                    ids.swap_remove(i);
                    true
                }
                None => false,
            },
            Repr::Many { bits, len } => {
                let present = bits[word(id)] & bit(id) != 0;
                if present {
                    bits[word(id)] &= !bit(id);
                    *len -= 1;
                }
                present
            }
        };
        // Empty: give the memory back (a burst's bitset, or a Vec that grew).
        if removed && self.is_empty() {
            self.0 = Repr::Few(Vec::new());
        }
        removed
    }

    /// Heap bytes held, for tests of the bound.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Few(ids) => ids.capacity() * std::mem::size_of::<u16>(),
            Repr::Many { bits, .. } => std::mem::size_of_val::<[u64]>(bits),
        }
    }
}

fn word(id: u16) -> usize {
    usize::from(id) / 64
}

fn bit(id: u16) -> u64 {
    1 << (id % 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn small_set_insert_contains_remove() {
        let mut s = PacketIdSet::new();
        assert!(s.is_empty());
        assert!(s.insert(7));
        assert!(!s.insert(7), "a repeated id is not new");
        assert!(s.insert(0));
        assert!(s.insert(u16::MAX));
        assert_eq!(s.len(), 3);
        assert!(s.contains(7) && s.contains(0) && s.contains(u16::MAX));
        assert!(!s.contains(8));
        assert!(s.remove(7));
        assert!(!s.remove(7));
        assert!(!s.contains(7));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn every_id_fits_in_8_kib_and_is_freed_when_empty() {
        let mut s = PacketIdSet::new();
        for id in 1..=u16::MAX {
            assert!(s.insert(id));
        }
        assert_eq!(s.len(), 65535);
        assert!(s.heap_bytes() <= 8192, "{} bytes", s.heap_bytes());
        assert!((1..=u16::MAX).all(|id| s.contains(id)));
        assert!(!s.contains(0));
        for id in 1..=u16::MAX {
            assert!(s.remove(id));
        }
        assert!(s.is_empty());
        assert_eq!(s.heap_bytes(), 0, "an empty set holds no memory");
    }

    #[test]
    fn crossing_the_small_limit_keeps_every_id() {
        let mut s = PacketIdSet::new();
        let ids: Vec<u16> = (0..=SMALL as u16).map(|i| i * 1000 + 3).collect();
        for &id in &ids {
            assert!(s.insert(id));
        }
        assert!(matches!(s.0, Repr::Many { .. }));
        assert_eq!(s.len(), ids.len());
        assert!(ids.iter().all(|&id| s.contains(id)));
        assert!(!s.insert(ids[0]), "still a set after the switch");
        assert_eq!(s.len(), ids.len());
    }

    #[test]
    fn small_set_stays_small() {
        let mut s = PacketIdSet::new();
        for id in 1..=SMALL as u16 {
            s.insert(id);
        }
        assert!(matches!(s.0, Repr::Few(_)));
        assert!(s.heap_bytes() <= SMALL * 2);
    }

    /// Seeded random operations agree with a `HashSet` at every step.
    #[test]
    fn agrees_with_a_hash_set() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut s = PacketIdSet::new();
        let mut model = HashSet::new();
        let (mut few, mut many) = (0, 0);
        for step in 0..200_000 {
            let r = next();
            // A narrow id range makes removals hit; phases of mostly inserts and mostly
            // removals move the size back and forth across SMALL and down to empty.
            let id = (r >> 16) as u16 % 300;
            let grow = (step / 2000) % 2 == 0;
            let insert = if grow { r % 10 != 0 } else { r % 10 == 0 };
            if insert {
                assert_eq!(s.insert(id), model.insert(id), "insert {id} at {step}");
            } else {
                assert_eq!(s.remove(id), model.remove(&id), "remove {id} at {step}");
            }
            assert_eq!(s.len(), model.len());
            assert_eq!(s.contains(id), model.contains(&id));
            match s.0 {
                Repr::Few(_) => few += 1,
                Repr::Many { .. } => many += 1,
            }
        }
        assert!(few > 0 && many > 0, "both forms exercised: {few} {many}");
    }
}
