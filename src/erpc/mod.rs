//! Enhanced-RPC channel (to be written).
