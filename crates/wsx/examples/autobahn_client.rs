//! Runs every Autobahn TestSuite case against the wsx client.
//!
//! Start the fuzzing server (`kosoku -m fuzzingserver 127.0.0.1:9001`), then:
//! `cargo run --release -p wsx --example autobahn_client -- ws://127.0.0.1:9001`

use std::process::ExitCode;

use wsx::proto::deflate::DeflateConfig;
use wsx::{ClientBuilder, Config, Message};

const AGENT: &str = "wsx";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(base) = std::env::args().nth(1) else {
        eprintln!("usage: autobahn_client ws://HOST:PORT");
        return ExitCode::FAILURE;
    };
    let base = base.trim_end_matches('/').to_owned();
    match run(&base).await {
        Ok(count) => {
            println!("ran {count} cases; reports updated");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("autobahn_client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(base: &str) -> Result<u32, wsx::Error> {
    let count = case_count(base).await?;
    for case in 1..=count {
        if let Err(e) = echo(&format!("{base}/runCase?case={case}&agent={AGENT}")).await {
            eprintln!("case {case}: {e}");
        }
    }
    let (mut ws, _) =
        ClientBuilder::new(format!("{base}/updateReports?agent={AGENT}")).connect().await?;
    while ws.recv().await.is_some() {}
    Ok(count)
}

async fn case_count(base: &str) -> Result<u32, wsx::Error> {
    let (mut ws, _) = ClientBuilder::new(format!("{base}/getCaseCount")).connect().await?;
    let mut count = None;
    while let Some(msg) = ws.recv().await {
        if let Message::Text(t) = msg? {
            count = t.trim().parse().ok();
        }
    }
    count.ok_or(wsx::Error::Url("the fuzzing server sent no case count".into()))
}

/// Echoes every data message until the connection ends.
async fn echo(url: &str) -> Result<(), wsx::Error> {
    // Offer client_no_context_takeover: cases 13.2, 13.5 and 13.6 accept compression only
    // from clients that offer it, and every other case works with it. Not
    // server_no_context_takeover (in the default offer): the cases choose the server's side.
    let deflate = DeflateConfig::default().server_no_context_takeover(false);
    let config = Config::default().deflate(Some(deflate));
    let (mut ws, _) = ClientBuilder::new(url).config(config).connect().await?;
    while let Some(msg) = ws.recv().await {
        match msg {
            Ok(msg) if msg.is_data() => ws.feed(msg).await?,
            Ok(_) => {}
            // The close frame for the violation is queued; the next recv sends it and ends.
            Err(e) => eprintln!("{url}: {e}"),
        }
    }
    Ok(())
}
