//! One small reader for walking frames: every read reports running out
//! instead of panicking, classic and compact (flexible-version) encodings are
//! told apart in one place, and an array count read off the wire never sizes
//! an allocation.

/// A cursor over a byte slice that reports running out instead of panicking.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8], pos: usize) -> Self {
        Cursor { bytes, pos }
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    pub(crate) fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn unsigned_varint(&mut self) -> Option<u32> {
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let byte = *self.take(1)?.first()?;
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// Classic nullable string: i16 length, -1 for null.
    pub(crate) fn skip_nullable_string(&mut self) -> Option<()> {
        let len = self.i16()?;
        if len >= 0 {
            self.take(len as usize)?;
        } else if len != -1 {
            return None;
        }
        Some(())
    }

    /// Compact (nullable) string: unsigned varint length + 1, 0 for null.
    pub(crate) fn skip_compact_string(&mut self) -> Option<()> {
        let len_plus_one = self.unsigned_varint()?;
        if len_plus_one > 0 {
            self.take(len_plus_one as usize - 1)?;
        }
        Some(())
    }

    pub(crate) fn i8(&mut self) -> Option<i8> {
        self.take(1).map(|b| b[0] as i8)
    }

    pub(crate) fn nullable_string(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.i16()?;
        match len {
            -1 => Some(None),
            n if n >= 0 => self.take(n as usize).map(Some),
            _ => None,
        }
    }

    pub(crate) fn compact_nullable_string(&mut self) -> Option<Option<&'a [u8]>> {
        let len_plus_one = self.unsigned_varint()?;
        if len_plus_one == 0 {
            return Some(None);
        }
        self.take(len_plus_one as usize - 1).map(Some)
    }

    /// An array count, refused when the frame could not hold that many
    /// elements of at least one byte (a count read off the wire never sizes
    /// an allocation).
    pub(crate) fn array_len(&mut self, compact: bool) -> Option<Option<usize>> {
        let count: i64 = if compact {
            i64::from(self.unsigned_varint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        if count < 0 {
            return (count == -1).then_some(None);
        }
        let count = count as usize;
        (count <= self.bytes.len() - self.pos).then_some(Some(count))
    }

    /// A nullable string, compact in flexible versions.
    pub(crate) fn string(&mut self, flexible: bool) -> Option<Option<&'a [u8]>> {
        if flexible {
            self.compact_nullable_string()
        } else {
            self.nullable_string()
        }
    }

    /// The tagged fields that end a structure in flexible versions.
    pub(crate) fn tags(&mut self, flexible: bool) -> Option<()> {
        if flexible {
            self.skip_tagged_fields()
        } else {
            Some(())
        }
    }

    pub(crate) fn skip_tagged_fields(&mut self) -> Option<()> {
        let count = self.unsigned_varint()?;
        for _ in 0..count {
            self.unsigned_varint()?;
            let size = self.unsigned_varint()?;
            self.take(size as usize)?;
        }
        Some(())
    }
}
