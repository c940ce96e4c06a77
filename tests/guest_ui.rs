//! Compile-time guarantees: what must not compile, does not; what 0.2.4 users wrote, does.

/// `BackdoorGuard` and `EnhancedChan` are neither `Send` nor `Sync`: Linux grants I/O
/// privilege per thread, so backdoor access must stay on the thread that took it.
#[test]
fn backdoor_access_stays_on_its_thread() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

/// A program written for 0.2.4, with every public name 0.2.4 had, compiles unchanged.
#[test]
fn a_program_written_for_0_2_4_compiles() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui-pass/*.rs");
}
