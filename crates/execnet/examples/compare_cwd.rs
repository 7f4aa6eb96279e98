//! Seed example 2.5.1: a popen gateway starts in the working directory of the host.
//!
//! (A spec such as `popen//chdir=somewhere` would move it; see the README.)
//!
//! Run: `cargo run -p execnet --example compare_cwd`

use std::path::Path;

fn main() -> execnet::Result<()> {
    let gw = execnet::makegateway("popen")?;
    let ch = gw.remote_exec("import os; channel.send(os.getcwd())")?;
    let remote_cwd: String = ch.receive()?;
    let our_cwd = std::env::current_dir()?;

    println!("our cwd:    {}", our_cwd.display());
    println!("remote cwd: {remote_cwd}");
    assert_eq!(Path::new(&remote_cwd), our_cwd);
    println!("same directory: true");

    gw.exit()?;
    Ok(())
}
