//! VMware host simulator (to be written).
