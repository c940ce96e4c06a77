//! The ptrace trap-and-emulate runner (to be written).
