//! Seed example 2.5.3: receive results from two subprocesses as they arrive.
//!
//! `MultiChannel::make_receive_queue` gives a queue of `(channel, item)` pairs, so each
//! result tells where it came from. Unlike execnet's queue, this one also reports the
//! end of each channel, once, as `(channel, None)`; the loop below skips those.
//!
//! Run: `cargo run -p execnet --example receive_queue`

use std::time::Duration;

use execnet::MultiChannel;

fn main() -> execnet::Result<()> {
    let ch1 = execnet::makegateway("popen")?.remote_exec("channel.send(1)")?;
    let ch2 = execnet::makegateway("popen")?.remote_exec("channel.send(2)")?;
    let mch = MultiChannel::new(vec![ch1.clone(), ch2.clone()]);
    let mut queue = mch.make_receive_queue::<i64>()?;

    let mut results = Vec::new();
    while results.len() < 2 {
        // `get()` waits as long as it takes; `get_timeout` gives up with Error::Timeout.
        let (channel, item) = queue.get_timeout(Duration::from_secs(30))?;
        let from = format!("{} channel {}", channel.gateway().id(), channel.id());
        match item {
            Some(result) => {
                println!("{from}: sent {result}");
                results.push((channel, result));
            }
            None => println!("{from}: closed"),
        }
    }
    let (chan1, res1) = &results[0];
    let (chan2, res2) = &results[1];

    println!("res1 + res2 = {}", res1 + res2);
    assert_eq!(res1 + res2, 3);
    assert!(*chan1 == ch1 || *chan1 == ch2);
    assert!(*chan2 == ch1 || *chan2 == ch2);
    assert_ne!(chan1, chan2);
    Ok(())
}
