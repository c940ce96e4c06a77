//! Reading fuzz input as a stream of small integers and byte strings, and writing it back
//! (the seed corpus is written with [`Writer`], so the two must stay mirror images).
//!
//! The reader never fails: past the end it yields zeros and empty slices, so every input
//! decodes to something and the fuzzer never wastes executions on "too short" inputs.

/// A cursor over the fuzz input.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Little-endian, zero-filled past the end.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Little-endian, zero-filled past the end.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Little-endian, zero-filled past the end.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A byte string prefixed by its length byte.
    pub fn short_bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.u8());
        self.bytes(n).to_vec()
    }
}

/// Builds fuzz input in the format [`Reader`] reads.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub out: Vec<u8>,
}

impl Writer {
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    /// Appends a little-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.out.extend_from_slice(v);
        self
    }

    /// Appends a length byte and the bytes; longer strings are cut to 255 bytes.
    pub fn short_bytes(&mut self, v: &[u8]) -> &mut Self {
        let v = v.get(..255).unwrap_or(v);
        self.u8(v.len() as u8).bytes(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_reader_agree() {
        let mut w = Writer::default();
        w.u8(7)
            .u16(0x1234)
            .u32(0xdead_beef)
            .u64(u64::MAX - 1)
            .short_bytes(b"abc");
        let mut r = Reader::new(&w.out);
        assert_eq!(
            (r.u8(), r.u16(), r.u32(), r.u64()),
            (7, 0x1234, 0xdead_beef, u64::MAX - 1)
        );
        assert_eq!(r.short_bytes(), b"abc");
        assert!(r.is_empty());
        assert_eq!((r.u8(), r.u32(), r.bytes(9)), (0, 0, &[][..]));
    }
}
