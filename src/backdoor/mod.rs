//! Backdoor access (to be written).
