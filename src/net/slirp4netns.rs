//! slirp4netns: the user-mode network stack that gives an isolated namespace its way out, and
//! the client of its API socket that forwards host ports into the namespace.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::forward::Forward;

/// The namespace's interface, created by slirp4netns.
pub const TAP: &str = "tap0";
/// slirp4netns's DNS forwarder in the namespace (its default 10.0.2.0/24 network).
pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The largest MTU slirp4netns takes: fewer, larger packets through the user-mode stack.
const MTU: u32 = 65520;
/// How long one API request may take; slirp4netns answers at once.
const API_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("cannot talk to slirp4netns at {}", path.display())]
    Api {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("slirp4netns refused to {action}: {reason}")]
    Refused { action: String, reason: String },
}

/// slirp4netns's arguments for the namespace of process `pid`: it configures the interface
/// (address, route, lo up), refuses connections to the host's loopback, sandboxes itself
/// (its own mount namespace, seccomp), writes to `ready` once configured and exits when `exit`
/// reaches end of file, that is when the last process holding its other end is gone.
pub fn args(pid: u32, ready: RawFd, exit: RawFd, api_socket: &Path) -> Vec<OsString> {
    let mut api = OsString::from("--api-socket=");
    api.push(api_socket);
    vec![
        "--configure".into(),
        format!("--mtu={MTU}").into(),
        "--disable-host-loopback".into(),
        "--enable-sandbox".into(),
        "--enable-seccomp".into(),
        format!("--ready-fd={ready}").into(),
        format!("--exit-fd={exit}").into(),
        // Joined to open the namespace's tap device, which takes its owner's privilege
        // there when vmrun does not run as root.
        format!("--userns-path=/proc/{pid}/ns/user").into(),
        api,
        pid.to_string().into(),
        TAP.into(),
    ]
}

/// Binds `forward`'s host side and leads it to the same port in the namespace (where QEMU's
/// own forward listens).
pub fn add_forward(api_socket: &Path, forward: &Forward) -> Result<(), Error> {
    let (protocol, address, port) = (forward.protocol.as_str(), forward.address, forward.host);
    request(
        api_socket,
        &json!({"execute": "add_hostfwd", "arguments": {
            "proto": protocol, "host_addr": address.to_string(),
            "host_port": port, "guest_port": port,
        }}),
        || format!("forward {protocol} {address}:{port}"),
    )
    .map(drop)
}

/// Removes what [`add_forward`] bound for `forward`, if slirp4netns has it.
pub fn remove_forward(api_socket: &Path, forward: &Forward) -> Result<(), Error> {
    let (protocol, address, port) = (forward.protocol.as_str(), forward.address, forward.host);
    let list = request(api_socket, &json!({"execute": "list_hostfwd"}), || {
        "list its forwards".into()
    })?;
    let entries = list["entries"].as_array().cloned().unwrap_or_default();
    let wanted = |e: &&Value| {
        e["proto"] == protocol && e["host_addr"] == address.to_string() && e["host_port"] == port
    };
    for entry in entries.iter().filter(wanted) {
        request(
            api_socket,
            &json!({"execute": "remove_hostfwd", "arguments": {"id": entry["id"]}}),
            || format!("remove the forward {protocol} {address}:{port}"),
        )?;
    }
    Ok(())
}

/// One request on a new connection (slirp4netns answers one per connection): its `return`.
fn request(api_socket: &Path, body: &Value, action: impl Fn() -> String) -> Result<Value, Error> {
    let io = |source| Error::Api {
        path: api_socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(api_socket).map_err(io)?;
    stream.set_read_timeout(Some(API_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(API_TIMEOUT)).map_err(io)?;
    stream.write_all(body.to_string().as_bytes()).map_err(io)?;
    stream.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut line = String::new();
    // The answer is a few hundred bytes; a longer one is not slirp4netns.
    BufReader::new(stream.take(64 << 10))
        .read_line(&mut line)
        .map_err(io)?;
    parse_reply(&line).map_err(|reason| Error::Refused {
        action: action(),
        reason,
    })
}

/// What a reply says: slirp4netns wraps some answers in `return` (`add_hostfwd`) and not
/// others (`list_hostfwd`), and refusals in `error`.
fn parse_reply(line: &str) -> Result<Value, String> {
    let reply: Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("unreadable reply ({e})"))?;
    if let Some(error) = reply.get("error") {
        return Err(error["desc"]
            .as_str()
            .unwrap_or("no reason given")
            .to_owned());
    }
    Ok(reply.get("return").unwrap_or(&reply).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_argument_list() {
        let args: Vec<String> = args(4242, 5, 6, Path::new("/r/slirp.sock"))
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "--configure --mtu=65520 --disable-host-loopback --enable-sandbox --enable-seccomp \
             --ready-fd=5 --exit-fd=6 --userns-path=/proc/4242/ns/user \
             --api-socket=/r/slirp.sock 4242 tap0"
        );
    }

    #[test]
    fn replies_are_returns_or_refusals() {
        assert_eq!(parse_reply("{\"return\": {\"id\": 3}}\n").unwrap()["id"], 3);
        assert_eq!(
            parse_reply(
                "{\"error\": {\"desc\": \"bad request: add_hostfwd: slirp_add_hostfwd failed\"}}"
            )
            .unwrap_err(),
            "bad request: add_hostfwd: slirp_add_hostfwd failed"
        );
        assert!(
            parse_reply("garbage")
                .unwrap_err()
                .starts_with("unreadable reply")
        );
        let list =
            parse_reply(r#"{"entries":[{"id":1,"proto":"tcp","host_port":45123}]}"#).unwrap();
        assert_eq!(list["entries"][0]["host_port"], 45123);
    }
}
