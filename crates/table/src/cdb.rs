//! D. J. Bernstein's constant database (cdb), read and written here.
//!
//! Layout: 256 header pairs (position, slot count) of little-endian u32,
//! then the records (key length, data length, key, data), then 256 open
//! addressing hash tables of (hash, record position) slots. The reader
//! treats the bytes as hostile: every position and length is checked
//! against the buffer before use, and probing is bounded by the slot count.

use std::ops::Range;

const HEADER: usize = 2048;
/// Largest db file we accept (it is held in memory).
pub const MAX_DB: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdbError {
    #[error("file too short for a cdb header ({0} bytes)")]
    TooShort(usize),
    #[error("hash table {index} lies outside the file")]
    TableOutOfBounds { index: usize },
    #[error("record at offset {pos} lies outside the data area")]
    RecordOutOfBounds { pos: usize },
    #[error("record at offset {pos} is not valid UTF-8")]
    NotUtf8 { pos: usize },
    #[error("database would exceed the 4 GiB cdb limit")]
    TooLarge,
}

fn u32_at(data: &[u8], pos: usize) -> Option<u32> {
    let b = data.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes(<[u8; 4]>::try_from(b).ok()?))
}

/// The cdb hash: h = 5381; h = (h * 33) ^ byte.
pub fn hash(key: &[u8]) -> u32 {
    key.iter().fold(5381u32, |h, &b| {
        (h.wrapping_shl(5).wrapping_add(h)) ^ u32::from(b)
    })
}

/// A validated cdb image held in memory.
#[derive(Debug)]
pub struct Cdb {
    data: Vec<u8>,
    /// End of the record area (start of the hash tables).
    eod: usize,
    /// Start offset of every record, in file order.
    records: Vec<u32>,
}

impl Cdb {
    /// Validate the header, every hash table's extent and every record;
    /// keys and values must be UTF-8 (tables hold text).
    pub fn parse(data: Vec<u8>) -> Result<Cdb, CdbError> {
        if data.len() < HEADER {
            return Err(CdbError::TooShort(data.len()));
        }
        let mut eod = data.len();
        for index in 0..256 {
            let pos = u32_at(&data, index * 8).ok_or(CdbError::TooShort(data.len()))? as usize;
            let slots =
                u32_at(&data, index * 8 + 4).ok_or(CdbError::TooShort(data.len()))? as usize;
            let end = (slots as u64)
                .checked_mul(8)
                .and_then(|n| n.checked_add(pos as u64));
            if pos < HEADER || end.is_none_or(|e| e > data.len() as u64) {
                return Err(CdbError::TableOutOfBounds { index });
            }
            eod = eod.min(pos);
        }
        let mut cdb = Cdb {
            data,
            eod,
            records: Vec::new(),
        };
        let mut pos = HEADER;
        while pos < eod {
            let (k, v) = cdb.record(pos).ok_or(CdbError::RecordOutOfBounds { pos })?;
            let (Some(kb), Some(vb)) = (cdb.data.get(k.clone()), cdb.data.get(v.clone())) else {
                return Err(CdbError::RecordOutOfBounds { pos });
            };
            if std::str::from_utf8(kb).is_err() || std::str::from_utf8(vb).is_err() {
                return Err(CdbError::NotUtf8 { pos });
            }
            cdb.records
                .push(u32::try_from(pos).map_err(|_| CdbError::TooLarge)?);
            pos = v.end;
        }
        Ok(cdb)
    }

    /// Key and data ranges of the record at `pos`, if it lies wholly in
    /// the record area.
    fn record(&self, pos: usize) -> Option<(Range<usize>, Range<usize>)> {
        if pos < HEADER {
            return None;
        }
        let klen = u32_at(&self.data, pos)? as usize;
        let dlen = u32_at(&self.data, pos.checked_add(4)?)? as usize;
        let kstart = pos.checked_add(8)?;
        let kend = kstart.checked_add(klen)?;
        let dend = kend.checked_add(dlen)?;
        if dend > self.eod {
            return None;
        }
        Some((kstart..kend, kend..dend))
    }

    fn text(&self, r: Range<usize>) -> Option<&str> {
        std::str::from_utf8(self.data.get(r)?).ok()
    }

    /// The data of the first record whose key is `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<&str>, CdbError> {
        let h = hash(key);
        let hdr = (h as usize & 255) * 8;
        let tpos = u32_at(&self.data, hdr).ok_or(CdbError::TooShort(self.data.len()))? as usize;
        let slots =
            u32_at(&self.data, hdr + 4).ok_or(CdbError::TooShort(self.data.len()))? as usize;
        if slots == 0 {
            return Ok(None);
        }
        let start = (h >> 8) as usize % slots;
        for i in 0..slots {
            let slot = (start + i) % slots;
            let at = tpos + slot * 8; // in bounds: checked in parse
            let (Some(sh), Some(sp)) = (u32_at(&self.data, at), u32_at(&self.data, at + 4)) else {
                return Err(CdbError::TableOutOfBounds {
                    index: h as usize & 255,
                });
            };
            if sp == 0 {
                return Ok(None);
            }
            if sh != h {
                continue;
            }
            let pos = sp as usize;
            let (k, v) = self
                .record(pos)
                .ok_or(CdbError::RecordOutOfBounds { pos })?;
            if self.data.get(k) == Some(key) {
                return self.text(v).map(Some).ok_or(CdbError::NotUtf8 { pos });
            }
        }
        Ok(None)
    }

    /// All records, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.records.iter().filter_map(|&pos| {
            let (k, v) = self.record(pos as usize)?;
            Some((self.text(k)?, self.text(v)?))
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.records.len()
    }
}

/// Build a cdb image from records, in the given order.
pub fn build<'a, I>(records: I) -> Result<Vec<u8>, CdbError>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut out = vec![0u8; HEADER];
    let mut buckets: Vec<Vec<(u32, u32)>> = vec![Vec::new(); 256];
    let to_u32 = |n: usize| u32::try_from(n).map_err(|_| CdbError::TooLarge);
    for (k, v) in records {
        let pos = to_u32(out.len())?;
        out.extend_from_slice(&to_u32(k.len())?.to_le_bytes());
        out.extend_from_slice(&to_u32(v.len())?.to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(v);
        let h = hash(k);
        if let Some(b) = buckets.get_mut(h as usize & 255) {
            b.push((h, pos));
        }
    }
    let mut header = Vec::with_capacity(HEADER);
    for bucket in &buckets {
        let slots = bucket.len() * 2;
        let tpos = to_u32(out.len())?;
        let mut table = vec![(0u32, 0u32); slots];
        for &(h, pos) in bucket {
            let mut s = (h >> 8) as usize % slots;
            // Half the slots stay empty, so a free one is always found.
            while table.get(s).is_some_and(|e| e.1 != 0) {
                s = (s + 1) % slots;
            }
            if let Some(e) = table.get_mut(s) {
                *e = (h, pos);
            }
        }
        for (h, pos) in table {
            out.extend_from_slice(&h.to_le_bytes());
            out.extend_from_slice(&pos.to_le_bytes());
        }
        header.extend_from_slice(&tpos.to_le_bytes());
        header.extend_from_slice(&to_u32(slots)?.to_le_bytes());
    }
    to_u32(out.len())?;
    if let Some(h) = out.get_mut(..HEADER) {
        h.copy_from_slice(&header);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let recs: Vec<(String, String)> = (0..500)
            .map(|i| (format!("key{i}"), format!("value{i}")))
            .collect();
        build(recs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).unwrap()
    }

    #[test]
    fn round_trip() {
        let cdb = Cdb::parse(sample()).unwrap();
        assert_eq!(cdb.len(), 500);
        for i in 0..500 {
            assert_eq!(
                cdb.get(format!("key{i}").as_bytes()).unwrap(),
                Some(format!("value{i}").as_str())
            );
        }
        assert_eq!(cdb.get(b"nope").unwrap(), None);
        assert_eq!(cdb.iter().next(), Some(("key0", "value0")));
    }

    #[test]
    fn known_hash() {
        // Reference values of the djb hash.
        assert_eq!(hash(b""), 5381);
        assert_eq!(hash(b"a"), (5381u32 * 33) ^ 97);
    }

    #[test]
    fn empty_db() {
        let img = build(std::iter::empty()).unwrap();
        assert_eq!(img.len(), HEADER);
        let cdb = Cdb::parse(img).unwrap();
        assert_eq!(cdb.len(), 0);
        assert_eq!(cdb.get(b"x").unwrap(), None);
    }

    #[test]
    fn truncated() {
        let img = sample();
        assert_eq!(
            Cdb::parse(img[..100].to_vec()).unwrap_err(),
            CdbError::TooShort(100)
        );
        // Cut inside the hash tables.
        let cut = img.len() - 4;
        assert!(matches!(
            Cdb::parse(img[..cut].to_vec()).unwrap_err(),
            CdbError::TableOutOfBounds { .. }
        ));
    }

    #[test]
    fn bad_header_offsets() {
        let mut img = sample();
        img[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Cdb::parse(img).unwrap_err(),
            CdbError::TableOutOfBounds { index: 0 }
        );
        let mut img = sample();
        // Position inside the header.
        img[8..12].copy_from_slice(&16u32.to_le_bytes());
        assert_eq!(
            Cdb::parse(img).unwrap_err(),
            CdbError::TableOutOfBounds { index: 1 }
        );
        let mut img = sample();
        img[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Cdb::parse(img).unwrap_err(),
            CdbError::TableOutOfBounds { index: 0 }
        );
    }

    #[test]
    fn huge_record_lengths() {
        let mut img = sample();
        img[HEADER..HEADER + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Cdb::parse(img).unwrap_err(),
            CdbError::RecordOutOfBounds { pos: HEADER }
        );
        let mut img = sample();
        img[HEADER + 4..HEADER + 8].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        assert_eq!(
            Cdb::parse(img).unwrap_err(),
            CdbError::RecordOutOfBounds { pos: HEADER }
        );
    }

    #[test]
    fn bad_slot_pointer_is_an_error_not_a_panic() {
        let img = build([(&b"k"[..], &b"v"[..])]).unwrap();
        let h = hash(b"k");
        let hdr = (h as usize & 255) * 8;
        let tpos = u32::from_le_bytes(img[hdr..hdr + 4].try_into().unwrap()) as usize;
        let slots = u32::from_le_bytes(img[hdr + 4..hdr + 8].try_into().unwrap()) as usize;
        let mut bad = img.clone();
        for s in 0..slots {
            let at = tpos + s * 8;
            if bad[at + 4..at + 8] != [0, 0, 0, 0] {
                bad[at + 4..at + 8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
            }
        }
        let cdb = Cdb::parse(bad).unwrap();
        assert_eq!(
            cdb.get(b"k").unwrap_err(),
            CdbError::RecordOutOfBounds { pos: 0xffff_fff0 }
        );
    }

    #[test]
    fn full_table_without_empty_slot_terminates() {
        // Every slot filled with a non-matching hash: probing must stop.
        let mut img = build([(&b"k"[..], &b"v"[..])]).unwrap();
        let h = hash(b"zz");
        let hdr = (h as usize & 255) * 8;
        let tpos = (img.len() - 16) as u32;
        img[hdr..hdr + 4].copy_from_slice(&tpos.to_le_bytes());
        img[hdr + 4..hdr + 8].copy_from_slice(&2u32.to_le_bytes());
        let n = img.len();
        for s in 0..2 {
            let at = n - 16 + s * 8;
            img[at..at + 4].copy_from_slice(&h.wrapping_add(1).to_le_bytes());
            img[at + 4..at + 8].copy_from_slice(&2048u32.to_le_bytes());
        }
        let cdb = Cdb::parse(img).unwrap();
        assert_eq!(cdb.get(b"zz").unwrap(), None);
    }

    #[test]
    fn non_utf8_record() {
        let img = build([(&b"\xff"[..], &b"v"[..])]).unwrap();
        assert_eq!(
            Cdb::parse(img).unwrap_err(),
            CdbError::NotUtf8 { pos: HEADER }
        );
    }
}
