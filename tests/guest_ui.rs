//! Compile-time guarantees: what must not compile, does not.

/// `BackdoorGuard` and `EnhancedChan` are neither `Send` nor `Sync`: Linux grants I/O
/// privilege per thread, so backdoor access must stay on the thread that took it.
#[test]
fn backdoor_access_stays_on_its_thread() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
