//! Seed example 2.5.5: start a socket server inside a popen gateway, and a second
//! gateway connected to it.
//!
//! The server is a few lines of Python sent with remote_exec (nothing is installed);
//! it listens on 127.0.0.1 with a free port, takes one connection and runs the new
//! gateway's worker inside the popen gateway's process.
//!
//! Run: `cargo run -p execnet --example socket_new_remote`

use execnet::Gateway;

fn main() -> execnet::Result<()> {
    let popengw = execnet::makegateway("popen")?;
    let socketgw = Gateway::new_remote_socket(&popengw, "127.0.0.1:0")?;
    println!("socket gateway: {}", socketgw.spec());

    let info = socketgw.rinfo()?; // information about the remote environment
    println!("{info:#?}");
    assert_eq!(info.pid, popengw.rinfo()?.pid, "the socket worker runs in the popen process");

    socketgw.exit()?;
    popengw.exit()?;
    Ok(())
}
