// I/O privilege belongs to one thread: a guard cannot move to another.
fn main() {
    let guard = vmw_backdoor::access_backdoor().unwrap();
    std::thread::spawn(move || drop(guard));
}
