//! Seed example 2.5.4: read file contents through a channel.
//!
//! The seed reads files over ssh; here the gateway is a local subprocess and the files
//! are ones this example writes into a temporary directory first. The remote code loops
//! over the channel: every item the host sends is a file name, and it answers with the
//! file's bytes. Closing the channel from the host ends that loop.
//!
//! Run: `cargo run -p execnet --example read_files`

use serde_bytes::ByteBuf;

fn main() -> execnet::Result<()> {
    // A few files to read: text, binary, and one of 64 KiB.
    let dir = tempfile::tempdir()?;
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = vec![
        (dir.path().join("hello.txt"), b"hello, world\n".to_vec()),
        (dir.path().join("binary.bin"), vec![0, 1, 2, 254, 255]),
        (dir.path().join("big.dat"), vec![b'x'; 64 * 1024]),
    ];
    for (path, content) in &files {
        std::fs::write(path, content)?;
    }

    // Open a gateway to a fresh child process.
    let gw = execnet::makegateway("popen")?;
    let channel = gw.remote_exec(
        r#"
        for fn in channel:
            with open(fn, 'rb') as f:
                channel.send(f.read())
        "#,
    )?;

    for (path, expected) in &files {
        channel.send(path.to_str().expect("a UTF-8 temp path"))?;
        // Python `bytes` arrive as bytes: receive them as a ByteBuf (or a Value).
        let content: ByteBuf = channel.receive()?;
        println!("{}: {} bytes", path.display(), content.len());
        assert_eq!(&content[..], &expected[..]);
    }

    // Closing the channel ends the remote `for` loop; then close the gateway.
    channel.close()?;
    gw.exit()?;
    Ok(())
}
