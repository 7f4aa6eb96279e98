//! Channels inside data, both ways.
//!
//! A channel is a value like any other: the host can send one of its channels to remote
//! code, and remote code can open a channel of its own with
//! `channel.gateway.newchannel()` and send it back inside a tuple. Each side then talks
//! on that channel directly.
//!
//! Run: `cargo run -p execnet --example channels`

use execnet::Channel;

fn main() -> execnet::Result<()> {
    let gw = execnet::makegateway("popen")?;
    let ch = gw.remote_exec(
        r#"
        # 1. The host sends a channel it made; answer on it.
        reply = channel.receive()
        reply.send('hello on channel %d' % reply.id)

        # 2. Open a channel here, send it to the host inside a tuple, stream on it.
        squares = channel.gateway.newchannel()
        channel.send(('squares', squares))
        for i in range(5):
            squares.send(i * i)
        squares.close()
        "#,
    )?;

    // 1. A channel made on the host, with no code attached, travels as data.
    let reply = gw.newchannel()?;
    ch.send(&reply)?;
    let greeting: String = reply.receive()?;
    println!("host-made channel {}: {greeting:?}", reply.id());

    // 2. A channel made by the worker arrives as a Channel (worker-made ids are even).
    let (label, squares): (String, Channel) = ch.receive()?;
    let items: Vec<i64> = squares.iter().collect::<execnet::Result<_>>()?;
    println!("worker-made channel {} ({label}): {items:?}", squares.id());
    assert_eq!(items, [0, 1, 4, 9, 16]);

    ch.waitclose(None)?;
    gw.exit()?;
    Ok(())
}
