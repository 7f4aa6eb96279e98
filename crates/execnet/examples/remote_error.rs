//! A remote exception surfaces on the host as `execnet::Error::Remote`.
//!
//! When the remote code raises, the worker closes the channel with the formatted
//! traceback. `receive` (once the items sent before are read) and `waitclose` then
//! return `Error::Remote { traceback }`. The gateway itself stays usable.
//!
//! Run: `cargo run -p execnet --example remote_error`

use execnet::Error;

fn main() -> execnet::Result<()> {
    let gw = execnet::makegateway("popen")?;
    let ch = gw.remote_exec(
        r#"
        def parse(text):
            return int(text)

        for text in channel:
            channel.send(parse(text))
        "#,
    )?;

    ch.send("42")?;
    println!("parse('42') = {}", ch.receive::<i64>()?);

    ch.send("forty-two")?;
    match ch.receive::<i64>() {
        Err(Error::Remote { traceback }) => {
            println!("parse('forty-two') raised remotely:\n{traceback}");
            assert!(traceback.contains("ValueError"));
            assert!(traceback.contains("in parse"));
        }
        other => panic!("expected a remote error, got {other:?}"),
    }

    // waitclose reports the same error; `remote_traceback()` is a shortcut to the text.
    let err = ch.waitclose(None).unwrap_err();
    assert!(err.remote_traceback().is_some());

    // The gateway survives an error in one execution.
    let ch = gw.remote_exec("channel.send('still alive')")?;
    println!("{}", ch.receive::<String>()?);

    gw.exit()?;
    Ok(())
}
