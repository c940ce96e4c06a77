//! TEMPORARY stand-in for the host model (`sim::host`, written on another branch): just
//! enough (GETVERSION, a fixed HB exchange) to exercise the ptrace machinery. Deleted when
//! the real host lands.
#![allow(missing_docs, dead_code)]

use crate::proto::{self, Regs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Vmware,
    NotVmware,
    RestrictBackdoor,
}

#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    mode: Mode,
}

impl HostConfig {
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub lb_calls: u64,
    pub hb_in_calls: u64,
    pub hb_out_calls: u64,
    pub bytes_to_host: u64,
}

#[derive(Debug)]
pub struct Host {
    mode: Mode,
    counters: Counters,
    pub last_out: Vec<u8>,
}

impl Host {
    pub fn new(config: HostConfig) -> Host {
        Host {
            mode: config.mode,
            counters: Counters::default(),
            last_out: Vec::new(),
        }
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
    pub fn lb(&mut self, regs: &mut Regs) {
        self.counters.lb_calls += 1;
        if self.mode == Mode::NotVmware || proto::lo32(regs.ax) != proto::MAGIC {
            regs.ax = 0xffff_ffff;
            return;
        }
        match proto::lo16(regs.cx) {
            proto::cmd::GETVERSION => {
                regs.ax = 6;
                regs.bx = u64::from(proto::MAGIC);
                regs.cx = 2;
            }
            _ => regs.ax = 0xffff_ffff,
        }
    }
    pub fn hb_out(&mut self, regs: &mut Regs, data: &[u8]) {
        self.counters.hb_out_calls += 1;
        self.counters.bytes_to_host += data.len() as u64;
        self.last_out = data.to_vec();
        regs.bx = 0x1_0000;
    }
    pub fn hb_in(&mut self, regs: &mut Regs) -> Vec<u8> {
        self.counters.hb_in_calls += 1;
        regs.bx = 0x1_0000;
        let mut v = b"hello from the host".to_vec();
        v.truncate(regs.cx as usize);
        v
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn stats_json(&self) -> String {
        format!("{{\"lb_calls\":{}}}", self.counters.lb_calls)
    }
}
