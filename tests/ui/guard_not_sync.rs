// Nor can another thread use it by reference.
fn main() {
    let guard = vmw_backdoor::access_backdoor().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| println!("{:?}", &guard));
    });
}
