// The peers benchmark's Node cluster: `node node_cluster.js WORKERS PORT`.
// The primary forks WORKERS workers (each a new node process: it execs);
// with NODE_CLUSTER_SCHED_POLICY=none the primary only opens the listener
// and the workers accept on it themselves (libuv, epoll), which is the
// case libthunder is about.  Each answers its pid, like wsgi_app.py.
"use strict";
const cluster = require("cluster");
const http = require("http");

const workers = Number(process.argv[2] || 1);
const port = Number(process.argv[3]);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  // A clean stop: the workers exit normally (so that exit handlers, and
  // libthunder's, run), then the primary.
  process.on("SIGTERM", () => {
    for (const id in cluster.workers) cluster.workers[id].process.kill("SIGTERM");
    cluster.on("exit", () => {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
    });
  });
} else {
  process.on("SIGTERM", () => process.exit(0));
  http.createServer((req, res) => {
    const body = `${process.pid}\n`;
    res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": body.length, Connection: "close" });
    res.end(body);
  }).listen({ port, host: "127.0.0.1", backlog: 1024 });
}
