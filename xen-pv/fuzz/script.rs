//! The fuzz input as a script of operations and operands, shared by the
//! ring targets (outside `fuzz_targets/`: not a target of its own). Past
//! the end, operands read as zero and operations stop.
#![allow(dead_code)]

#[repr(align(4096))]
pub struct Page(pub [u8; 4096]);

pub struct Script<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Script<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Script { data, at: 0 }
    }

    pub fn byte(&mut self) -> Option<u8> {
        let b = self.data.get(self.at).copied();
        self.at += 1;
        b
    }

    pub fn half(&mut self) -> u16 {
        u16::from_le_bytes([self.byte().unwrap_or(0), self.byte().unwrap_or(0)])
    }

    pub fn word(&mut self) -> u32 {
        u32::from_le_bytes([(); 4].map(|_| self.byte().unwrap_or(0)))
    }
}
