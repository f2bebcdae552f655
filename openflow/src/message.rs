//! An OpenFlow message being built, big-endian, for [`super::wire`].

use super::consts::VERSION;

/// A message being built: header first, its length fixed at the end.
pub struct Message(pub(super) Vec<u8>);

impl Message {
    pub fn new(kind: u8, xid: u32) -> Self {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&[VERSION, kind, 0, 0]);
        bytes.extend_from_slice(&xid.to_be_bytes());
        Message(bytes)
    }

    pub(super) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(super) fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    pub(super) fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }

    /// The finished message, its length in the header.
    pub fn finish(mut self) -> Vec<u8> {
        let len = u16::try_from(self.0.len()).unwrap_or(u16::MAX);
        self.0[2..4].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}
