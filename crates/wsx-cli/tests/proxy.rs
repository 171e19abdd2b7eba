//! `wsx connect` through real proxies (tinyproxy, microsocks) and redirects, against
//! `wsx serve`: `--proxy`, the proxy variables of the environment (set per command with
//! `Command::env`), `--no-proxy`, `--max-redirects` and `-v`'s redirect lines.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::proxies::{microsocks, tinyproxy};
use common::{Server, HANG_GUARD, WSX};

/// Every variable that could send `wsx connect` through a proxy.
const PROXY_VARS: [&str; 11] = [
    "ws_proxy",
    "WS_PROXY",
    "wss_proxy",
    "WSS_PROXY",
    "http_proxy",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

#[test]
fn proxy_flag_goes_through_tinyproxy_and_microsocks() {
    let server = Server::start(&[]);
    let Some(http) = tinyproxy(&[server.port], None) else { return };
    let Some(socks) = microsocks(None) else { return };
    let url = format!("ws://localhost:{}/", server.port);

    let run = connect(&["--proxy", &http.url("http", None), &url], &[], b"via http\n");
    assert_eq!(stdout(&run), "via http\n", "{run:?}");
    assert!(http.log().contains(&format!("CONNECT localhost:{}", server.port)), "{}", http.log());

    let run = connect(&["--proxy", &socks.url("socks5h", None), &url], &[], b"via socks\n");
    assert_eq!(stdout(&run), "via socks\n", "{run:?}");
    assert!(
        socks.log().contains(&format!("connected to localhost:{}", server.port)),
        "{}",
        socks.log()
    );
}

#[test]
fn proxy_refusals_are_one_line_naming_the_proxy() {
    let server = Server::start(&[]);
    let Some(http) = tinyproxy(&[server.port], Some(("u", "p"))) else { return };
    let run = connect(&["--proxy", &http.url("http", None), &server.url()], &[], b"x\n");
    assert_one_error_line(
        &run,
        &format!("proxy 127.0.0.1:{} requires authentication (407)", http.port),
    );
    let run =
        connect(&["--proxy", &http.url("http", Some(("u", "p"))), &server.url()], &[], b"ok\n");
    assert_eq!(stdout(&run), "ok\n", "{run:?}");

    let run = connect(&["--proxy", "https://127.0.0.1:1", &server.url()], &[], b"");
    assert_one_error_line(&run, "invalid --proxy: https://127.0.0.1:1: https:// proxies");
}

#[test]
fn the_environment_names_the_proxy_and_no_proxy_skips_it() {
    let server = Server::start(&[]);
    let Some(socks) = microsocks(None) else { return };
    let via = socks.url("socks5", None);
    let through = format!("connected to 127.0.0.1:{}", server.port);

    let run = connect(&[&server.url()], &[("ws_proxy", &via)], b"env\n");
    assert_eq!(stdout(&run), "env\n", "{run:?}");
    assert_eq!(socks.log().matches(&through).count(), 1, "{}", socks.log());
    let run = connect(&[&server.url()], &[("all_proxy", &via)], b"all\n");
    assert_eq!(stdout(&run), "all\n", "{run:?}");
    assert_eq!(socks.log().matches(&through).count(), 2, "{}", socks.log());

    // A proxy that is not there: used unless no_proxy or --no-proxy says otherwise.
    let nowhere = format!("http://127.0.0.1:{}", common::free_port());
    let run = connect(&[&server.url()], &[("ws_proxy", &nowhere)], b"x\n");
    assert_one_error_line(&run, &format!("proxy {} is unreachable", &nowhere[7..]));
    let run =
        connect(&[&server.url()], &[("ws_proxy", &nowhere), ("NO_PROXY", "127.0.0.1")], b"np\n");
    assert_eq!(stdout(&run), "np\n", "{run:?}");
    let run = connect(&["--no-proxy", &server.url()], &[("ws_proxy", &nowhere)], b"direct\n");
    assert_eq!(stdout(&run), "direct\n", "{run:?}");
    assert_eq!(socks.log().matches(&through).count(), 2, "{}", socks.log());
}

#[test]
fn redirects_are_followed_and_shown_with_verbose() {
    let server = Server::start(&[]);
    let target = format!("ws://127.0.0.1:{}/echo", server.port);
    let redirector = redirector(&format!("http://127.0.0.1:{}/echo", server.port));
    let start = format!("ws://{redirector}/start");

    let run = connect(&["-v", &start], &[], b"moved\n");
    assert_eq!(stdout(&run), "moved\n", "{run:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let hop = format!("redirect 301 Moved Permanently: {start} -> {target}\n");
    assert!(stderr.starts_with(&hop), "{run:?}");
    assert!(stderr.contains("101 Switching Protocols"), "{run:?}");

    let run = connect(&["--max-redirects", "0", &start], &[], b"x\n");
    assert_one_error_line(
        &run,
        &format!(
            "redirect 301 Moved Permanently to http://127.0.0.1:{}/echo not followed: \
             redirects are off",
            server.port
        ),
    );
}

// ---------------------------------------------------------------------------------------------

/// Runs `wsx connect ARGS` with only `env` of the proxy variables, `input` on stdin.
fn connect(args: &[&str], env: &[(&str, &str)], input: &[u8]) -> Output {
    let mut cmd = Command::new(WSX);
    cmd.arg("connect").args(args);
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let stderr = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            panic!("wsx connect {args:?} did not exit within {HANG_GUARD:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

fn stdout(run: &Output) -> String {
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// A failed run with one `wsx: error:` line on stderr that contains `needle`.
fn assert_one_error_line(run: &Output, needle: &str) {
    assert!(!run.status.success(), "{run:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {run:?}");
    assert!(lines[0].starts_with("wsx: error: "), "{run:?}");
    assert!(lines[0].contains(needle), "{needle:?} expected: {run:?}");
}

/// A server answering every request with `301 Location: location`, on a thread of its own that
/// lives as long as the test process.
fn redirector(location: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let response = format!(
        "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
    );
    thread::spawn(move || {
        for mut tcp in listener.incoming().flatten() {
            let _ = tcp.set_read_timeout(Some(HANG_GUARD));
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = tcp.write_all(response.as_bytes());
        }
    });
    addr
}
