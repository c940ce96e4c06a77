//! What one probe costs outside VMware, where the knock's `in` faults (or, with I/O
//! privilege, reads all ones) inside the contained child.
//!
//! ```sh
//! cargo bench --bench probe
//! ```
//!
//! - `probe_backdoor/faulting`: the unprivileged knock faults (#GP, SIGSEGV in the child);
//!   core dumps off (`RLIMIT_CORE` 0).
//! - `probe_backdoor/faulting, core dumps on, 300 MiB caller`: the same with `RLIMIT_CORE`
//!   unlimited in a process holding 300 MiB, the setting under which a child that *dies* of
//!   the fault writes a core file of the whole shared address space.
//! - `probe_backdoor_privileged/not faulting`: with I/O privilege (root) the `in` completes
//!   and reads all ones; the path a real VMware answer takes. Skipped without privilege.
//!
//! The core-dump case runs in a temporary directory, so a core file (on code where the child
//! still dies of the fault) does not land in the checkout.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

/// Sets the soft `RLIMIT_CORE` (at most the hard limit, which stays).
fn set_core_limit(limit: u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write one rlimit struct, a live local.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_CORE, &mut rl), 0);
        rl.rlim_cur = limit.min(rl.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_CORE, &rl), 0);
    }
}

fn probe(c: &mut Criterion) {
    assert!(
        vmw_backdoor::probe_backdoor().is_err(),
        "this bench measures the probe outside VMware"
    );
    let mut group = c.benchmark_group("probe_backdoor");
    set_core_limit(0);
    group.bench_function("faulting", |b| {
        b.iter(|| black_box(vmw_backdoor::probe_backdoor()).is_err())
    });

    let dir = std::env::temp_dir().join(format!("vmw-probe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let back = std::env::current_dir().unwrap();
    std::env::set_current_dir(&dir).unwrap();
    set_core_limit(libc::RLIM_INFINITY);
    let resident: Vec<u8> = vec![1; 300 << 20]; // touched, so it is in the address space
    group.sample_size(10);
    group.bench_function("faulting, core dumps on, 300 MiB caller", |b| {
        b.iter(|| black_box(vmw_backdoor::probe_backdoor()).is_err())
    });
    black_box(&resident);
    drop(resident);
    set_core_limit(0);
    std::env::set_current_dir(back).unwrap();
    let cores = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    println!("core files written during the core-dump case: {cores}");
    group.finish();

    if vmw_backdoor::access_backdoor_privileged().is_ok() {
        c.bench_function("probe_backdoor_privileged/not faulting", |b| {
            b.iter(|| black_box(vmw_backdoor::probe_backdoor_privileged()).is_err())
        });
    } else {
        println!("probe_backdoor_privileged/not faulting: skipped, no I/O privilege here");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = probe
}
criterion_main!(benches);
