// Nor can another thread use a channel by reference.
fn main() {
    let mut guard = vmw_backdoor::access_backdoor().unwrap();
    let chan = guard.open_enhanced_chan().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| println!("{}", chan.max_reply_len()));
    });
}
