//! The VMware host model (to be written).
