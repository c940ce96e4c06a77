// A channel talks through its guard's thread: it cannot move to another thread either.
fn main() {
    let mut guard = vmw_backdoor::access_backdoor().unwrap();
    let chan = guard.open_enhanced_chan().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || drop(chan));
    });
}
