//! What needs the channel's internals. Every behaviour a user relies on is tested once, over
//! every transport (in memory and through the real instructions), in `tests/guest_channel.rs`.

use crate::sim::host::{Host, HostConfig};
use crate::RpciChannel;

#[test]
fn debug_output_never_contains_the_cookies() {
    let mut host = Host::new(HostConfig::default().seed(7));
    let rpci = RpciChannel::open(&mut host).unwrap();
    let text = format!("{rpci:?}");
    let (high, low) = rpci.cookies();
    assert!(high != 0 && low != 0);
    for cookie in [high, low] {
        assert!(!text.contains(&cookie.to_string()), "{text}");
        assert!(!text.contains(&format!("{cookie:x}")), "{text}");
        assert!(!text.contains(&format!("{cookie:X}")), "{text}");
    }
}
