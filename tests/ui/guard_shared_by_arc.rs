// Sharing a guard through `Arc` would let two threads use one thread's I/O privilege.
use std::sync::Arc;

fn main() {
    let guard = Arc::new(vmw_backdoor::access_backdoor().unwrap());
    let other = Arc::clone(&guard);
    std::thread::spawn(move || other.is_privileged());
}
