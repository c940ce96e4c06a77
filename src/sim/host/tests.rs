//! Register-level tests of the host model.
