//! Seed example 2.5.2: receive one result from each of two subprocesses.
//!
//! `MultiChannel::receive_each` receives one item from every channel, in channel order,
//! blocking on each in turn.
//!
//! Run: `cargo run -p execnet --example receive_each`

use execnet::MultiChannel;

fn main() -> execnet::Result<()> {
    // Two gateways, two processes. A channel keeps its gateway alive, so the gateways
    // need no variables of their own here.
    let ch1 = execnet::makegateway("popen")?.remote_exec("channel.send(1)")?;
    let ch2 = execnet::makegateway("popen")?.remote_exec("channel.send(2)")?;

    let mch = MultiChannel::new(vec![ch1, ch2]);
    let l: Vec<i64> = mch.receive_each()?;

    println!("received: {l:?}");
    assert_eq!(l.len(), 2);
    assert!(l.contains(&1));
    assert!(l.contains(&2));

    // Both remote executions end by themselves; wait for that.
    mch.waitclose(None)?;
    println!("both channels closed");
    Ok(())
}
