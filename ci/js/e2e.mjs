// End-to-end check of `phxsim serve` with the real phoenix.js (npm phoenix 1.8.16) over `ws`:
// alice joins room:e2e-v1|v2 on node 1 and bob on node 3; each must list the other within two
// broadcast periods; alice's meta update and bob's leave must reach the other side.
//
//   node ci/js/e2e.mjs --url1 ws://127.0.0.1:4000/socket --url3 ws://127.0.0.1:4002/socket \
//        --vsn 2.0.0|1.0.0 --period 200 [--slack 100]
//
// Prints one line per step and "e2e ok" at the end; exits 1 on the first failed step. With
// --vsn 1.0.0 the client speaks the V1 object serializer through phoenix.js's encode/decode
// options (phoenix.js only ships the V2 one).

import { Socket, Presence } from "phoenix"
import WebSocket from "ws"

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 ? process.argv[i + 1] : fallback
}

const url1 = arg("url1")
const url3 = arg("url3")
const vsn = arg("vsn", "2.0.0")
const period = Number(arg("period", "1500"))
// Slack on top of two periods for the event loop and the two WebSocket hops; a loaded machine
// (a test suite on two cores) can stall a process for a few hundred milliseconds.
const slack = Number(arg("slack", "100"))
// One topic per serializer: the suite runs both against one cluster, and the first run's alice
// may still be listed on node 3 until the next broadcast carries her leave.
const topic = `room:e2e-v${vsn[0]}`
if (!url1 || !url3 || !["1.0.0", "2.0.0"].includes(vsn) || !(period > 0) || !(slack >= 0)) {
  console.error("usage: e2e.mjs --url1 URL --url3 URL [--vsn 1.0.0|2.0.0] [--period MS] [--slack MS]")
  process.exit(2)
}

// The V1 serializer: objects {topic, event, payload, ref} (and join_ref, which Phoenix reads
// if present); the server never sends join_ref in V1.
const v1 = {
  encode(msg, callback) {
    const { topic, event, payload, ref, join_ref } = msg
    return callback(JSON.stringify({ topic, event, payload, ref, join_ref }))
  },
  decode(raw, callback) {
    const { topic, event, payload, ref } = JSON.parse(raw)
    return callback({ join_ref: null, ref, topic, event, payload })
  },
}

function connect(url, user, name) {
  const opts = { transport: WebSocket, params: { user_id: user }, vsn, heartbeatIntervalMs: 5000 }
  if (vsn === "1.0.0") Object.assign(opts, v1)
  const socket = new Socket(url, opts)
  socket.connect()
  const channel = socket.channel(topic, { meta: { name } })
  const presence = new Presence(channel)
  return { socket, channel, presence }
}

function listed(client) {
  const out = {}
  client.presence.list((key, { metas }) => { out[key] = metas })
  return out
}

function fail(msg) {
  console.error(`e2e FAILED (vsn ${vsn}): ${msg}`)
  process.exit(1)
}

// Resolves when `check()` holds after a presence sync, or fails after `ms`.
function until(clients, what, ms, check) {
  return new Promise(resolve => {
    const started = Date.now()
    const done = () => {
      if (check()) {
        clearInterval(timer)
        clearTimeout(limit)
        resolve(Date.now() - started)
      }
    }
    const timer = setInterval(done, 5)
    const limit = setTimeout(() => fail(`${what} not within ${ms} ms; views: ${JSON.stringify(clients.map(listed))}`), ms)
    done()
  })
}

function joined(client, who) {
  return new Promise(resolve => {
    client.channel.join()
      .receive("ok", resp => {
        if (resp.joined_as !== who) fail(`${who} joined as ${JSON.stringify(resp)}`)
        resolve()
      })
      .receive("error", resp => fail(`${who} join refused: ${JSON.stringify(resp)}`))
      .receive("timeout", () => fail(`${who} join timed out`))
  })
}

const alice = connect(url1, "alice", "Alice")
const bob = connect(url3, "bob", "Bob")
await Promise.all([joined(alice, "alice"), joined(bob, "bob")])
console.log("joined: alice on node 1, bob on node 3")

// Each must see the other within two broadcast periods of both being joined, plus the slack.
const limit = 2 * period + slack
const t1 = await until([alice, bob], "alice lists bob", limit, () => "bob" in listed(alice))
const t2 = await until([alice, bob], "bob lists alice", limit, () => "alice" in listed(bob))
console.log(`cross-node presence: alice saw bob after ${t1} ms, bob saw alice after ${t2} ms (limit ${limit} ms)`)
const a = listed(bob).alice
if (a.length !== 1 || a[0].name !== "Alice" || a[0].status !== "online" || typeof a[0].phx_ref !== "string") {
  fail(`bob's view of alice: ${JSON.stringify(a)}`)
}

await new Promise(resolve => {
  alice.channel.push("update_meta", { name: "Alice", status: "away" })
    .receive("ok", resolve)
    .receive("error", e => fail(`update_meta refused: ${JSON.stringify(e)}`))
    .receive("timeout", () => fail("update_meta timed out"))
})
const t3 = await until([alice, bob], "bob sees alice away", limit, () => {
  const m = listed(bob).alice
  return m && m.length === 1 && m[0].status === "away" && typeof m[0].phx_ref_prev === "string"
})
console.log(`meta update reached node 3 after ${t3} ms`)

await new Promise(resolve => {
  bob.channel.leave().receive("ok", resolve).receive("timeout", () => fail("leave timed out"))
})
const t4 = await until([alice, bob], "alice sees bob leave", limit, () => !("bob" in listed(alice)))
console.log(`leave reached node 1 after ${t4} ms`)

// Close both sockets with a close frame before exiting, as a browser tab closing does.
await Promise.all([alice, bob].map(c => new Promise(resolve => c.socket.disconnect(resolve))))
console.log("e2e ok")
process.exit(0)
