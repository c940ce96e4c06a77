fn main() {
    match vmw_backdoor::probe_backdoor() {
        Ok(mut g) => println!("{:?}", g.get_version()),
        Err(e) => println!("err: {e} {:?}", e.kind()),
    }
    match vmw_backdoor::probe_backdoor_privileged() {
        Ok(mut g) => println!("{:?}", g.get_version()),
        Err(e) => println!(
            "err: {e} {:?} {:?}",
            e.kind(),
            std::error::Error::source(&e)
        ),
    }
    let mut g = vmw_backdoor::access_backdoor().unwrap();
    println!("{:?}", g.open_enhanced_chan().map(|_| ()));
    println!("{:?} alive", g);
}
