// The real phoenix.js Presence behind the JSON-lines format of `phxsim presence-sync`
// (../../../shared/spec/presence-sync.md), so the Rust implementation can be judged against it.
//
//   node ci/js/presence-adapter.mjs --mode static|instance < stream.jsonl
//
// Every line that is not blank or a comment gives one output line. Input is validated (the same
// rules as phxsim_wire::presence) *before* phoenix.js sees it, so a malformed message is an error
// line and leaves the state untouched, instead of phoenix.js throwing half-way through a
// mutation. `{"op":"reset"}` starts over with a fresh state (the differential test batches many
// streams into one process with it).

import { Presence } from "phoenix"
import { readFileSync } from "node:fs"

const INITIAL_JOIN_REF = "1"

function parseMode(argv) {
  const i = argv.indexOf("--mode")
  const mode = i >= 0 ? argv[i + 1] : "static"
  if (mode !== "static" && mode !== "instance") {
    process.stderr.write(`presence-adapter: --mode must be static or instance, got ${mode}\n`)
    process.exit(2)
  }
  return mode
}

function kind(v) {
  if (v === null) return "null"
  if (Array.isArray(v)) return "an array"
  switch (typeof v) {
    case "boolean": return "a boolean"
    case "number": return "a number"
    case "string": return "a string"
    default: return "an object"
  }
}

const isObject = v => typeof v === "object" && v !== null && !Array.isArray(v)
const has = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key)

// Returns an error message, or null when `presences` is a valid key -> {metas: [object...]} map.
function checkPresences(what, presences) {
  if (!isObject(presences)) return `${what} must be a JSON object, found ${kind(presences)}`
  for (const key of Object.getOwnPropertyNames(presences)) {
    const p = presences[key]
    const name = JSON.stringify(key)
    if (!isObject(p)) return `presence ${name} must be a JSON object, found ${kind(p)}`
    if (!has(p, "metas")) return `presence ${name} has no "metas"`
    if (!Array.isArray(p.metas)) return `presence ${name}: "metas" must be an array, found ${kind(p.metas)}`
    for (let i = 0; i < p.metas.length; i++) {
      if (!isObject(p.metas[i])) return `presence ${name}: meta #${i} must be an object, found ${kind(p.metas[i])}`
    }
  }
  return null
}

function checkDiff(diff) {
  if (!isObject(diff)) return `presence_diff payload must be a JSON object, found ${kind(diff)}`
  if (!has(diff, "joins")) return `presence_diff has no "joins"`
  if (!has(diff, "leaves")) return `presence_diff has no "leaves"`
  return checkPresences("presence_diff joins", diff.joins) || checkPresences("presence_diff leaves", diff.leaves)
}

// A channel stub: phoenix.js Presence only calls on(event, cb) and joinRef().
class FakeChannel {
  constructor() { this.bindings = {}; this.ref = INITIAL_JOIN_REF }
  on(event, callback) { this.bindings[event] = callback }
  joinRef() { return this.ref }
  trigger(event, payload) { this.bindings[event](payload) }
}

// Arguments are recorded as they are at the moment of the call: phoenix.js mutates them later.
const snapshot = v => (v === undefined ? null : JSON.parse(JSON.stringify(v)))

class Driver {
  constructor(mode) { this.mode = mode; this.step = 0; this.reset() }

  reset() {
    this.events = []
    this.state = {}
    this.channel = new FakeChannel()
    this.presence = new Presence(this.channel)
    this.presence.onJoin(this.onJoin)
    this.presence.onLeave(this.onLeave)
    this.presence.onSync(() => this.events.push({ cb: "sync" }))
  }

  onJoin = (key, current, joined) =>
    this.events.push({ cb: "join", key, current: snapshot(current), new: snapshot(joined) })

  onLeave = (key, current, left) =>
    this.events.push({ cb: "leave", key, current: snapshot(current), left: snapshot(left) })

  line(raw) {
    const trimmed = raw.trim()
    if (trimmed === "" || trimmed.startsWith("#") || trimmed.startsWith("//")) return null
    const step = ++this.step
    let msg
    try {
      msg = JSON.parse(raw)
    } catch (e) {
      return { step, error: `line is not JSON: ${e.message}` }
    }
    if (!isObject(msg)) return { step, error: `line must be a JSON object, found ${kind(msg)}` }
    if (!has(msg, "op")) return { step, error: `line has no "op"` }
    const op = msg.op
    if (typeof op !== "string") return { step, error: `"op" must be a string, found ${kind(op)}` }
    const payload = has(msg, "payload") ? msg.payload : null
    this.events = []
    try {
      const error = this.apply(op, payload)
      if (error !== null) return { step, op, error }
    } catch (e) {
      // Input was validated, so this is phoenix.js failing on something we let through.
      return { step, op, error: `phoenix.js threw: ${e && e.stack ? e.stack : e}` }
    }
    const state = this.mode === "static" ? this.state : this.presence.state
    const out = {
      step, op, events: this.events,
      keys: Object.getOwnPropertyNames(state),
      state,
      list: Presence.list(state),
    }
    if (this.mode === "instance") out.pending = this.presence.pendingDiffs.length
    return out
  }

  apply(op, payload) {
    switch (op) {
      case "state": {
        const error = checkPresences("presence_state payload", payload)
        if (error) return error
        if (this.mode === "static") {
          this.state = Presence.syncState(this.state, payload, this.onJoin, this.onLeave)
        } else {
          this.channel.trigger("presence_state", payload)
        }
        return null
      }
      case "diff": {
        const error = checkDiff(payload)
        if (error) return error
        if (this.mode === "static") {
          this.state = Presence.syncDiff(this.state, payload, this.onJoin, this.onLeave)
        } else {
          this.channel.trigger("presence_diff", payload)
        }
        return null
      }
      case "join_ref":
        if (typeof payload !== "string") return `join_ref payload must be a string, found ${kind(payload)}`
        this.channel.ref = payload
        return null
      case "reset":
        this.reset()
        return null
      default:
        return `unknown op ${JSON.stringify(op)}`
    }
  }
}

const driver = new Driver(parseMode(process.argv.slice(2)))
const input = readFileSync(0, "utf8")
const lines = input.split(/\r?\n/)
if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop()
const out = []
for (const raw of lines) {
  const result = driver.line(raw)
  if (result !== null) out.push(JSON.stringify(result))
}
process.stdout.write(out.length > 0 ? out.join("\n") + "\n" : "")
