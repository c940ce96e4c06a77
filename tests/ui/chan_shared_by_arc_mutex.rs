// Nor can it be shared with a spawned thread through `Arc<Mutex<_>>`.
use std::sync::{Arc, Mutex};

fn main() {
    let guard: &'static mut vmw_backdoor::BackdoorGuard =
        Box::leak(Box::new(vmw_backdoor::access_backdoor().unwrap()));
    let chan = Arc::new(Mutex::new(guard.open_enhanced_chan().unwrap()));
    let other = Arc::clone(&chan);
    std::thread::spawn(move || other.lock().unwrap().log("from another thread").ok());
}
