// A mutex does not help: the guard's privilege belongs to the thread that took it, whoever
// holds the lock.
use std::sync::{Arc, Mutex};

fn main() {
    let guard = Arc::new(Mutex::new(vmw_backdoor::access_backdoor().unwrap()));
    let other = Arc::clone(&guard);
    std::thread::spawn(move || other.lock().unwrap().get_version().ok());
}
