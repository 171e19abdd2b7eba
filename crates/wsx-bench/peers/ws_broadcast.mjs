// Pub/sub peer for scripts/bench.sh: Node's `ws` broadcasting every message to every client,
// the sender included, as ws's README writes a broadcast (uWebSockets' broadcast_test
// semantics). ws's defaults otherwise (no permessage-deflate, TCP_NODELAY set by ws).
//
//   node ws_broadcast.mjs [--listen HOST:PORT]     (default 127.0.0.1:9001)

import { createRequire } from "node:module";
import { WebSocket, WebSocketServer } from "ws";

const args = process.argv.slice(2);
const at = args.indexOf("--listen");
const listen = at >= 0 && args[at + 1] ? args[at + 1] : "127.0.0.1:9001";
const colon = listen.lastIndexOf(":");
const host = listen.slice(0, colon);
const port = Number(listen.slice(colon + 1));
const { version } = createRequire(import.meta.url)("ws/package.json");

const wss = new WebSocketServer({ host, port });
wss.on("connection", (ws) => {
  ws.on("error", () => {});
  ws.on("message", (data, isBinary) => {
    wss.clients.forEach((client) => {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    });
  });
});
wss.on("listening", () => {
  console.error(`ws_broadcast: ws ${version} on node ${process.version} listening on ws://${listen}/`);
});
