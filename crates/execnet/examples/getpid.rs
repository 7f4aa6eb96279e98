//! Seed example 2.2: run code in a new Python process and read its process id.
//!
//! `makegateway("popen")` starts a `python3` subprocess that has nothing installed; the
//! host ships it the worker and then the code below. The remote code sees the other end
//! of the returned channel as the global `channel`.
//!
//! Run: `cargo run -p execnet --example getpid`

fn main() -> execnet::Result<()> {
    let gw = execnet::makegateway("popen")?;
    let channel = gw.remote_exec(
        r#"
        import os
        channel.send(os.getpid())
        "#,
    )?;
    let remote_pid: u32 = channel.receive()?;
    let our_pid = std::process::id();

    println!("our pid:    {our_pid}");
    println!("remote pid: {remote_pid}");
    assert_ne!(remote_pid, our_pid, "the code ran in another process");
    println!("remote_pid != our pid: true");

    // Ask the worker to exit and reap the process (dropping the last handle does it too).
    gw.exit()?;
    Ok(())
}
