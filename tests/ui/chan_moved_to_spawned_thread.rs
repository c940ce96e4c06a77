// Even a channel that lives forever (on a leaked guard) cannot move to another thread.
fn main() {
    let guard: &'static mut vmw_backdoor::BackdoorGuard =
        Box::leak(Box::new(vmw_backdoor::access_backdoor().unwrap()));
    let mut chan = guard.open_enhanced_chan().unwrap();
    std::thread::spawn(move || chan.log("from another thread"));
}
